"""RISE on a testnet image: the original library's per-pixel API (max and mean merges) and the
Dice-weighted form through the common entry point. Writes examples/rise_max.png,
rise_mean.png and rise_dice.png."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _testnet_model import model_and_sample  # noqa: E402

from interpret_segmentation import RISE  # noqa: E402
from interpret_segmentation.rise import SegmentationRISE  # noqa: E402

device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
model, image, segment, sample = model_and_sample(1)
model = model.to(device)
here = Path(__file__).parent

explainer = SegmentationRISE(model, (240, 240), device)
masks_path = here / "rise_masks.npy"
if masks_path.exists():
    explainer.load_masks(masks_path)
else:
    explainer.generate_masks(N=1000, s=8, p1=0.5, savepath=masks_path)
result = explainer(image[None].to(device))
dice_weighted = RISE(model, n_masks=2000).explain(image).saliency

for name, saliency in (("max", result.max()), ("mean", result.mean()), ("dice", dice_weighted)):
    _, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(saliency, cmap="jet")
    axes[1].imshow(image[0], cmap="gray")
    axes[1].imshow(saliency, cmap="jet", alpha=0.5)
    for axis in axes:
        axis.axis("off")
    plt.suptitle(f"RISE ({name})")
    plt.savefig(here / f"rise_{name}.png", bbox_inches="tight")
    plt.close()
    print(f"{here / f'rise_{name}.png'} generated")
