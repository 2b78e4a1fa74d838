"""Optional ``backbone="timm:<name>"``: any timm model with ``features_only`` support.

timm is imported only when such a backbone is requested (it needs torchvision, so it is never a
core dependency). timm's own pretrained download is never triggered: weights come from
``pretrained=<path or URL>`` like every other backbone.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from torch import Tensor, nn

from segattn.models.backbones.resnet import FeatureInfo


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except Exception:  # ImportError, or torchvision import errors inside timm
        return False
    return True


class TimmBackbone(nn.Module):
    """Wrap ``timm.create_model(name, features_only=True, ...)`` with segattn's backbone interface."""

    def __init__(
        self,
        name: str,
        *,
        in_chans: int = 3,
        output_stride: int = 32,
        out_indices: Optional[Sequence[int]] = None,
        pretrained: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not timm_available():
            raise ImportError(f"backbone 'timm:{name}' needs timm (pip install 'segattn[timm]')")
        import timm

        kw: dict = dict(features_only=True, in_chans=in_chans, pretrained=False, **kwargs)
        if output_stride != 32:
            kw["output_stride"] = output_stride
        self.model = timm.create_model(name, **kw)
        fi = self.model.feature_info
        info = [{"num_chs": c, "reduction": r, "module": m} for c, r, m in zip(fi.channels(), fi.reduction(),
                                                                               fi.module_name())]
        # segattn heads expect four stages (aux head on the third): by default the last four levels
        take = tuple(out_indices) if out_indices is not None else tuple(range(len(info)))[-4:]
        self.feature_info = FeatureInfo(info, take)
        self.output_stride, self.out_indices, self.features_only = output_stride, take, True
        if pretrained:
            from segattn.checkpoints.named import resolve_pretrained
            from segattn.checkpoints.reading import read_checkpoint

            state = read_checkpoint(resolve_pretrained(pretrained))
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if missing or unexpected:
                import warnings

                warnings.warn(f"timm:{name} weights: missing {list(missing)[:10]}, unexpected {list(unexpected)[:10]}",
                              stacklevel=2)

    def forward(self, x: Tensor) -> List[Tensor]:
        feats = self.model(x)
        return [feats[i] for i in self.out_indices]
