import pytest
import torch
from oracles import randomise_batchnorm
from torch import nn

from interpret_segmentation.core import explanation_mode, folded_batchnorm
from interpret_segmentation.methods.gradcam import SegGradCAM
from interpret_segmentation.methods.misure import MiSuRe


def _normalised_net(seed: int = 0) -> nn.Module:
    """Conv+BN pairs with and without conv bias and BN affine, with trained-looking statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.ReLU()),
        nn.Conv2d(4, 1, 1),
    )
    return randomise_batchnorm(net).eval()


def test_folding_keeps_outputs_and_restores_the_model():
    net = _normalised_net()
    x = torch.rand(2, 1, 12, 12)
    expected = net(x)
    parameters = dict(net.named_parameters())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with folded_batchnorm(net) as folded:
        assert folded == 2
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    assert dict(net.named_parameters()).keys() == parameters.keys()
    assert all(p is parameters[name] for name, p in net.named_parameters())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert isinstance(net[1], nn.BatchNorm2d) and net[0].bias is None


def test_folding_leaves_training_norms_and_hooked_layers_alone_and_undoes_after_an_error():
    net = _normalised_net()
    net[1].train()
    handle = net[3][0].register_forward_hook(lambda *args: None)
    with folded_batchnorm(net) as folded:
        assert folded == 0
    handle.remove()
    net.eval()
    with pytest.raises(RuntimeError, match="inside"):
        with folded_batchnorm(net):
            raise RuntimeError("inside")
    assert isinstance(net[1], nn.BatchNorm2d) and isinstance(net[3][1], nn.BatchNorm2d)


def test_explainers_fold_while_explaining_and_give_the_unfolded_result():
    net = nn.Sequential(_normalised_net(1), nn.Conv2d(1, 2, 1))  # two-class softmax output
    net.train()  # explain() uses eval mode and gives the training mode back
    image = torch.rand(1, 16, 16)
    with explanation_mode(net, fold_batchnorm=False), torch.no_grad():
        classes = net(image[None]).argmax(1)
    target = int(classes.flatten().mode().values)
    folded = MiSuRe(net, iterations=5, progress=False).explain(image, target)
    plain = MiSuRe(net, iterations=5, progress=False, fold_batchnorm=False).explain(image, target)
    assert folded.info["dilations"] == plain.info["dilations"]
    assert abs(folded.saliency - plain.saliency).max() < 1e-3
    assert net.training and isinstance(net[0][1], nn.BatchNorm2d)


def test_seg_grad_cam_does_not_fold():
    with pytest.raises(ValueError, match="fold_batchnorm"):
        SegGradCAM(_normalised_net(), layer="3", fold_batchnorm=True)
    assert SegGradCAM(_normalised_net(), layer="3").fold_batchnorm is False
