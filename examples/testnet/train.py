"""Train the testnet U-Net on examples/testnet/dataset/. Each epoch's results go to stdout and
examples/testnet/results/<name>.txt; the weights to examples/testnet/<name>_<epoch>.pth (name
"testnet" unless --name), and the last epoch to examples/testnet/testnet.pth, which
examples/hdm.py and examples/rise.py load, unless that file exists.
Options: ``python examples/testnet/train.py --help``."""

import sys
from pathlib import Path

from interpret_segmentation.cli import main

if __name__ == "__main__":
    here = Path(__file__).parent
    sys.exit(main(["testnet", "train", "--dataset", str(here / "dataset"),
                   "--checkpoint-dir", str(here), *sys.argv[1:]]))
