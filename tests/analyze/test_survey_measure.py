"""`segattn.analyze.measure` survey step, PGD and the interventions, on models whose answers are known."""

import warnings

import pytest
import torch
from torch import nn

import segattn
from segattn.analyze import measure
from segattn.analyze.measure import survey as SV
from segattn.data.synthetic import CUE_COLORS, SyntheticContext


class Linear2(nn.Module):
    """Per-pixel linear 2-class classifier: logits = W x + b."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-1.0, 1.0, 1.5]])[:, :, None, None])
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x)


def test_pgd_stays_in_the_ball_and_reaches_the_linear_optimum():
    model = Linear2().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    y = model(x).argmax(1)
    eps = 0.05
    adv = measure.pgd(model, x, y, eps, 255, steps=10, generator=torch.Generator().manual_seed(1))
    assert (adv - x).abs().max() <= eps + 1e-7
    # for a 2-class linear model the worst case in the L-inf ball is the vertex eps * sign(w_other - w_true)
    w = model.conv.weight[:, :, 0, 0]
    direction = torch.stack([(w[1] - w[0]).sign(), (w[0] - w[1]).sign()])[y].permute(0, 3, 1, 2)
    assert torch.allclose(adv, x + eps * direction, atol=1e-6)
    assert torch.allclose(adv, measure.fgsm(model, x, y, eps, 255), atol=1e-6)  # FGSM finds it in one step
    # zero steps: only the random start, inside the ball and not at x
    start = measure.pgd(model, x, y, eps, 255, steps=0, generator=torch.Generator().manual_seed(1))
    assert 0 < (start - x).abs().max() <= eps


def test_pgd_in_robustness_report_and_masking_check():
    model = Linear2().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g)
    batches = [(x, model(x).argmax(1))]
    r = measure.measure_robustness(model, batches, 2, 255, sigmas=(), eps=(2 / 255,))
    assert r["miou_clean"] == 100.0
    assert r["miou_pgd10_0.007843"] <= r["miou_fgsm_0.007843"] + 1e-9  # PGD at least as strong
    assert r["fgsm_gap_0.007843"] >= 0 and r["pgd_masking_0.007843"] <= 1e-9
    # transfer from the model itself = its own white-box PGD (same generator seed)
    t = measure.transfer_miou(model, model, batches, 2, 255, eps=2 / 255, steps=10, seed=1)
    assert t == pytest.approx(r["miou_pgd10_0.007843"])


def _tiny(model_name="fcn", **kw):
    torch.manual_seed(0)
    return segattn.create_model(model_name, num_classes=3, backbone="localnet", output_stride=8,
                                channels=16, backbone_kw={"width": 16}, **kw).eval()


def _synthetic_batches(n=4):
    ds = SyntheticContext(n, size=(64, 64), num_classes=3, cue_size=8, margin=16, split="val")  # cue and shapes in different 8x8 cells
    items = [ds[i] for i in range(n)]
    return [(torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]).long())]


def test_swap_cues_swaps_partner_colours_only():
    x = torch.full((1, 3, 4, 4), 0.5)
    x[0, :, 0, 0] = torch.tensor(CUE_COLORS[0]) / 255.0
    x[0, :, 1, 1] = torch.tensor(CUE_COLORS[3]) / 255.0
    y = SV.swap_cues(x)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor(CUE_COLORS[1]) / 255.0)
    assert torch.allclose(y[0, :, 1, 1], torch.tensor(CUE_COLORS[2]) / 255.0)
    grey = torch.ones(4, 4, dtype=torch.bool)
    grey[0, 0] = grey[1, 1] = False
    assert torch.equal(y[0][:, grey], x[0][:, grey])
    assert torch.allclose(SV.swap_cues(y), x)  # an involution


def test_identity_slot_is_the_control():
    """The FCN's identity slot: path = input, denoising index 1, within/between unchanged, no flow."""
    model = _tiny("fcn")
    batches = _synthetic_batches()
    out = measure.measure_survey(model, batches, 3, 255, synthetic=True)
    assert out["denoise_index_out"] == pytest.approx(1.0, abs=1e-6)
    assert out["denoise_index_identity"] == pytest.approx(1.0, abs=1e-6)
    # the box filter passes about 1/9 of white noise (more at the 8x8 map's reflected borders) but also
    # removes some of this rough signal, so its index is below 1 but above 1/9
    assert out["noise_gain_box3"] < 0.3 and out["denoise_index_box3"] < 1.0
    assert out["within_out"] == pytest.approx(out["within_in"], rel=1e-6)
    assert out["fisher_path"] == pytest.approx(out["fisher_in"], rel=1e-6)
    assert out["fisher_gain_path"] == pytest.approx(1.0, rel=1e-6)
    assert out["cf_module"] == 0.0  # the identity cannot carry the cue to the shapes
    assert "miou_meanrow" not in out


def test_mean_row_intervention_equals_mean_attention_row():
    """Non-local with the intervention = A replaced by its mean row, computed by hand from the factors."""
    model = _tiny("nonlocal")
    module = measure.context_slot(model)
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        _, f = module(x, return_attention=True)
        a, v = f["attention"][0], f["value"][0]  # (N, M), (M, C')
        y_hand = (a.mean(0, keepdim=True) @ v).expand(a.shape[0], -1)
        with SV.tap_context(module, mean_row=True) as st:
            module(x)
    assert torch.allclose(st["path"][0].T, y_hand, atol=1e-5)
    with torch.no_grad(), SV.tap_context(module) as st2:
        module(x)
    assert torch.allclose(st2["path"][0].T, a @ v, atol=1e-5)  # without it: the plain A v
    assert "_aggregate" not in module.__dict__  # patch removed


@pytest.mark.parametrize("name", ["nonlocal", "emanet", "pspnet", "danet", "ocnet", "ann"])
def test_survey_step_on_context_modules(name):
    model = _tiny(name)
    out = measure.measure_survey(model, _synthetic_batches(), 3, 255, synthetic=True)
    keys = ["erank_path", "denoise_index_out", "denoise_index_path", "fisher_in", "fisher_path",
            "boundary_contrast_out", "cf_module", "cf_logits"]
    keys += ["bases_centred_cosine", "bases_gram_erank_fraction"] if name in ("emanet", "pspnet") else []
    keys += ["miou_meanrow", "meanrow_drop"] if name != "pspnet" else []
    for key in keys:
        assert key in out, key
    if name == "emanet":
        assert {"cf_module_T1", "cf_module_T5", "bases_gram_erank_fraction"} <= set(out)
        assert out["erank_path"] <= 64 + 1e-6


def test_small_cells_are_the_cells_of_acc_smalls_bin():
    """4r's small segments are 4s's: areas counted in pixels, the bin below the first tertile edge."""
    from segattn.analyze.measure import segments as SG

    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[0:2, 0:2] = 1  # 4 px: the small bin
    mask[8:14, 8:14] = 1  # 36 px
    mask[0:4, 10:14] = 2  # 16 px: the tertile edge itself, so medium
    edges = SG.area_edges(SG.segment_records_of(None, [(None, mask[None])], 255))
    assert edges[:3] == [0.0, 16.0, 36.0]
    px = SG.small_segment_pixels(mask, edges[1], 255)
    assert px.sum() == 4 and px[0:2, 0:2].all()
    cells = SV.small_cells(mask[None], edges[1], (8, 8), 255)
    assert cells.shape == (1, 8, 8) and cells.sum() == 1 and cells[0, 0, 0]
    # a 1-px speck (under 0.01 % of a 128x128 image) is not a segment; nor is the background
    big = torch.zeros(128, 128, dtype=torch.long)
    big[5, 5] = 1
    assert not SG.small_segment_pixels(big, 100.0, 255).any()


@pytest.mark.parametrize("name", ["a2net", "emanet"])
def test_mean_row_intervention_on_low_rank_blocks(name):
    """Low-rank blocks: the intervention's path is the plain path's mean over pixels, at every pixel,
    and the module's output changes (the intervention reaches the forward)."""
    model = _tiny(name)
    module = measure.context_slot(model)
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad(), SV.tap_context(module) as plain:
        y0 = module(x)
    with torch.no_grad(), SV.tap_context(module, mean_row=True) as inter:
        y1 = module(x)
    p0, p1 = plain["path"][0], inter["path"][0]
    assert torch.allclose(p1, p0.mean(1, keepdim=True).expand_as(p0), atol=1e-5)
    assert not torch.allclose(p0, p1)
    y0 = y0[0] if isinstance(y0, tuple) else y0
    y1 = y1[0] if isinstance(y1, tuple) else y1
    assert not torch.allclose(y0, y1)
    assert SV.context_path(module, x).shape == p0.shape


def test_gcnet_path_is_its_one_added_vector():
    model = _tiny("gcnet")
    module = measure.context_slot(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.channel_add.parameters():
            p.normal_()  # the last conv starts at zero: give the path something to carry
    x = torch.randn(1, 16, 6, 6)
    path = SV.context_path(module, x)
    with torch.no_grad():
        y = module(x)
    assert path.shape == (16, 36)
    assert torch.allclose(path, (y - x)[0].reshape(16, -1), atol=1e-5)  # GCNet's output is x + that vector
    from segattn.analyze import metrics as M
    assert M.effective_rank(path) == pytest.approx(1.0, abs=1e-6)


def _with_aggregator():
    """Every registered context module with a Non-local or low-rank aggregator (the taps' targets)."""
    names = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SGR without a knowledge graph
        for name in segattn.list_modules():
            if SV._aggregators(segattn.create_module(name, in_channels=16)):
                names.append(name)
    return names


@pytest.mark.parametrize("name", _with_aggregator())
def test_every_aggregator_is_reached_by_the_taps(name):
    """The taps see every registered module that has an aggregator: its context path is stored and the
    mean-row intervention changes the output (DNL's forward once bypassed ``_aggregate``: no path and a
    mean-row drop of exactly 0, read as "query-independent")."""
    torch.manual_seed(0)
    module = segattn.create_module(name, in_channels=16).eval()
    with torch.no_grad():
        for p in module.parameters():  # no zero-initialised output: the context must reach the output
            p.copy_(0.5 * torch.randn_like(p))
    x = torch.randn(1, 16, 6, 7)
    with torch.no_grad(), SV.tap_context(module) as plain:
        y0 = module(x)
    with torch.no_grad(), SV.tap_context(module, mean_row=True):
        y1 = module(x)
    assert "path" in plain, name
    y0 = y0[0] if isinstance(y0, tuple) else y0
    y1 = y1[0] if isinstance(y1, tuple) else y1
    assert not torch.allclose(y0, y1, atol=1e-6), name


@pytest.mark.parametrize("name,kwargs", [("ccnet", {"recurrence": 1}), ("psanet", {"shrink_factor": 1}),
                                         ("ocr", {})])
def test_mean_row_averages_over_the_query_pixels(name, kwargs):
    """CCNet's context is a (B, C, H, W) map and PSANet's (B, C, N), not tokens: the intervention must
    average over their pixels (each channel's context becomes the image's mean), not over channels."""
    torch.manual_seed(0)
    module = segattn.create_module(name, in_channels=16, **kwargs).eval()
    x = torch.randn(1, 16, 6, 7)
    with torch.no_grad(), SV.tap_context(module) as plain:
        module(x)
    with torch.no_grad(), SV.tap_context(module, mean_row=True) as meanrow:
        module(x)
    path, mean = plain["path"], meanrow["path"]
    assert path.shape[-1] == 42 and mean.shape == path.shape
    expected = path.mean(dim=-1, keepdim=True).expand_as(path)
    torch.testing.assert_close(mean, expected)
    assert path.std(dim=-1).mean() > 10 * mean.std(dim=-1).mean() + 1e-6  # the plain context varies over pixels
