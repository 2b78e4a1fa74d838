"""LocalNet: a backbone whose receptive field is exactly one image patch (or a stated few).

A context module's worth shows when the backbone cannot see far. The dilated ResNets see the whole
of any image small enough for a quick experiment (ResNet-18 at output stride 8 has a theoretical
receptive field of about 435 px), so on a small task a plain FCN reads a distant cue by itself and
every head looks alike. LocalNet fixes the backbone's view instead:

* stem: a ``p x p`` convolution of stride ``p`` (``p`` = ``output_stride``; a ViT patch embedding)
  -> BatchNorm -> ReLU: each output cell sees exactly its own ``p x p`` patch;
* four stages of ``blocks`` residual blocks ``x + BN(conv1x1(ReLU(BN(conv_k(x)))))``, all at
  stride ``p`` and ``width`` channels; with ``kernel_size = 1`` (the default) they mix channels
  only, so the receptive field stays one patch, and each ``k x k`` conv widens it by
  ``(k - 1) * p`` pixels (:attr:`LocalNet.receptive_field`).

Shapes: (B, C_in, H, W) -> four (B, width, ceil(H / p), ceil(W / p)) maps (the image is zero-padded
on the bottom and right to a multiple of ``p``). It has no pretrained weights: a test bed for
controlled experiments (the synthetic comparison protocol), not a feature extractor for real data.
"""

from __future__ import annotations

from typing import List, Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from segattn.layers import BatchNorm2d, ConvNormAct
from segattn.models.backbones.resnet import FeatureInfo
from segattn.registry import BACKBONES


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"LocalNet {name} must be a positive int, got {value!r}")
    return value


class LocalBlock(nn.Module):
    """``x + BN(conv1x1(ReLU(BN(conv_k(x)))))`` followed by ReLU, at constant width and stride."""

    def __init__(self, width: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(width, width, kernel_size)
        self.conv2 = ConvNormAct(width, width, 1, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.conv2(self.conv1(x)))


class LocalNet(nn.Module):
    """Patch-embedding stem plus four stages of local residual blocks (see the module docstring).

    Args:
        in_chans: image channels.
        output_stride: the patch size ``p`` and the reduction of every returned map.
        width: channels of the stem and of every stage.
        blocks: residual blocks per stage.
        kernel_size: the first conv of each block (odd); 1 keeps the receptive field one patch.
        out_indices: 0 = stem, 1..4 = layer1..layer4 (as the ResNets).
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        output_stride: int = 8,
        width: int = 64,
        blocks: int = 1,
        kernel_size: int = 1,
        out_indices: Sequence[int] = (1, 2, 3, 4),
    ) -> None:
        super().__init__()
        self.output_stride = p = _positive_int("output_stride", output_stride)
        width, blocks = _positive_int("width", width), _positive_int("blocks", blocks)
        if _positive_int("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(f"LocalNet kernel_size must be odd (same padding), got {kernel_size}")
        if not out_indices or any(i not in range(5) for i in out_indices):
            raise ValueError(f"out_indices must lie in 0..4 (0 = stem, 1..4 = layer1..4), got {tuple(out_indices)}")
        self.kernel_size, self.blocks = kernel_size, blocks
        self.out_indices = tuple(out_indices)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, p, p, bias=False),
                                  BatchNorm2d(width), nn.ReLU(inplace=True))
        for i in range(1, 5):
            self.add_module(f"layer{i}", nn.Sequential(*(LocalBlock(width, kernel_size) for _ in range(blocks))))
        names = ["stem", "layer1", "layer2", "layer3", "layer4"]
        info = [{"num_chs": width, "reduction": p, "module": n} for n in names]
        self.feature_info = FeatureInfo(info, self.out_indices)
        self.num_features = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the square of the image that one output cell of layer4 sees."""
        return self.output_stride * (1 + 4 * self.blocks * (self.kernel_size - 1))

    def stages(self) -> List[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> List[Tensor]:
        if x.dim() != 4:
            raise ValueError(f"LocalNet expects a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
        pad_h, pad_w = -x.shape[-2] % self.output_stride, -x.shape[-1] % self.output_stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = []
        for stage in self.stages():
            x = stage(x)
            feats.append(x)
        return [feats[i] for i in self.out_indices]


@BACKBONES.register("localnet", form="patch stem + local residual blocks (exact receptive field)")
def localnet(**kwargs: object) -> LocalNet:
    """LocalNet (receptive field = one ``output_stride`` patch by default). Keywords: see :class:`LocalNet`.

    It returns features only, has no pretrained weights and no dilation (no ``multi_grid``).
    """
    if kwargs.pop("pretrained", None):
        raise ValueError("localnet has no pretrained weights; leave pretrained empty")
    if kwargs.pop("multi_grid", None) is not None:
        raise ValueError("localnet has no dilated stages; leave multi_grid empty")
    if not kwargs.pop("features_only", True):
        raise ValueError("localnet returns features only (features_only=True)")
    return LocalNet(**kwargs)  # type: ignore[arg-type]

