"""create_model: a keyword the model does not take is named, with the accepted ones."""

import pytest

import segattn
from segattn.errors import ArgumentError


@pytest.mark.parametrize("name, kwargs, match", [
    ("fcn", {"chanels": 8}, r"model 'fcn' takes no keyword argument\(s\) 'chanels' \(did you mean 'channels'\?\); "
                            r"accepted: .*backbone.*channels.*dilation"),
    ("pspnet", {"context": "ema"}, r"model 'pspnet' takes no keyword argument\(s\) 'context' "
                                   r"\(did you mean 'context_kw'\?\); accepted: .*context_kw"),
    ("generic", {"foo": 1}, r"'foo'; accepted: .*context, context_kw"),
])
def test_unknown_model_keyword_is_named_with_the_accepted_ones(name, kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        segattn.create_model(name, 3, backbone="resnet18", **kwargs)


def test_model_keywords_are_the_models_and_the_builders():
    from segattn.models.factory import model_keywords

    accepted = model_keywords("generic")
    assert {"context", "context_kw", "dropout", "backbone", "channels", "aux", "output_stride"} <= set(accepted)
    assert "num_classes" not in accepted and "make_head" not in accepted
    segattn.create_model("generic", 3, backbone="resnet18", aux=False, channels=8, context="ema",
                         context_kw={"num_bases": 4}, dropout=0.0)
