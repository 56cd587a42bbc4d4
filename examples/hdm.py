"""Hausdorff Distance Masks on a testnet image, with the original library's API.
Writes examples/hdm_raw.png, hdm_better.png and hdm_worse.png."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _testnet_model import model_and_sample  # noqa: E402

from interpret_segmentation import hdm  # noqa: E402

device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
model, image, segment, sample = model_and_sample(1)
model = model.to(device)

explainer = hdm.HausdorffDistanceMasks(240, 240)
explainer.generate_masks(circle_size=25, offset=5)
result = explainer.explain(model, image, segment, device)

here = Path(__file__).parent
for kind, name, colours in ((hdm.RAW, "raw", "Blues"), (hdm.BETTER_ONLY, "better", "Greens"),
                            (hdm.WORSE_ONLY, "worse", "Reds")):
    plt.figure(figsize=(5, 5))
    plt.imshow(result.circle_map(kind, color_map=colours))
    plt.imshow(sample.image > 0, cmap="gray_r", alpha=0.3)  # the shapes, for orientation
    plt.title(f"HDM {name} ({sample.meta['right_shape']} on the right)")
    plt.axis("off")
    plt.savefig(here / f"hdm_{name}.png", bbox_inches="tight")
    plt.close()
    print(f"{here / f'hdm_{name}.png'} generated")
