"""Create examples/testnet/dataset/ (1000 testnet samples). Refuses when it exists; --force
replaces it. Other options: see ``python examples/testnet/generate.py --help``."""

import sys
from pathlib import Path

from interpret_segmentation.cli import main

if __name__ == "__main__":
    here = Path(__file__).parent
    sys.exit(main(["testnet", "generate", "--out", str(here / "dataset"), *sys.argv[1:]]))
