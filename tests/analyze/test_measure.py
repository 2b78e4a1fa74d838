"""`segattn.analyze.measure` on small models whose answers are known."""

import pytest
import torch
from torch import nn

from segattn.analyze import measure
from segattn.analyze import metrics as M
from segattn.lowrank.mappers import em_step


class ConstantModel(nn.Module):
    """Logits that ignore the input (a learned constant per class)."""

    def __init__(self, k=3):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, 0.1, -0.2])[:k])

    def forward(self, x):
        return self.bias[None, :, None, None].expand(x.shape[0], -1, *x.shape[-2:]) + 0 * x[:, :1]


class PixelModel(nn.Module):
    """A 1x1 conv classifier: its output depends on every input pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None] * 5)

    def forward(self, x):
        return self.conv(x)


def _batches(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(4, 3, size, size, generator=g)
        out.append((x, x.argmax(1)))
    return out


def test_input_independent_model_has_flat_robustness():
    r = measure.measure_robustness(ConstantModel().eval(), _batches(), 3, 255)
    drops = {k: v for k, v in r.items() if k.startswith("drop_")}
    assert len(drops) == 6 and all(v == 0.0 for v in drops.values())  # 2 noise, 2 FGSM, 2 PGD
    # a model that reads its pixels does lose accuracy (the metric can move)
    r2 = measure.measure_robustness(PixelModel().eval(), _batches(), 3, 255)
    assert r2["drop_noise_0.1"] > 1.0 and r2["drop_fgsm_0.007843"] > 0.0


def _tiny(model_name="fcn", **kw):
    import segattn

    torch.manual_seed(0)
    return segattn.create_model(model_name, num_classes=3, backbone="localnet", output_stride=8,
                                channels=16, backbone_kw={"width": 16}, **kw).eval()


def test_fcn_measures_as_the_identity():
    model = _tiny("fcn")
    feats = measure.measure_features(model, _batches(1, 32), 255)
    assert feats["separation_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert feats["erank_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert feats["nsr_gain"] == pytest.approx(1.0, abs=1e-9)
    assert feats["pooled_separation_out"] == pytest.approx(feats["pooled_separation_in"], rel=1e-12)
    assert measure.measure_stage_swap(model, _batches(1, 32), 3, 255) == {}


def test_em_objective_never_decreases_and_stage_swap_restores():
    model = _tiny("generic", context="ema", context_kw={"num_bases": 4, "num_stages": 3})
    ema = model.head.context
    with torch.no_grad():  # bases that differ, features with structure: the EM ascent is visible
        ema.block.mapper.bases.copy_(torch.nn.functional.normalize(torch.randn(16, 4), dim=0))
        ema.block.mapper.kernel_scale = 5.0
    curves = measure.em_curves(model, _batches(1, 32), synthetic=True)
    obj = curves["em_objective"]
    assert len(obj) == 5 and all(b >= a - 1e-6 for a, b in zip(obj, obj[1:]))
    assert set(curves) >= {"em_entropy", "em_bases_cosine"}
    swap = measure.measure_stage_swap(model, _batches(1, 32), 3, 255)
    assert set(swap) == {f"{k}_T{t}" for k in ("miou", "pooled_separation") for t in (1, 3, 5)}
    assert ema.block.mapper.num_stages == 3


def test_em_step_objective_is_em_ascent_by_hand():
    # two clusters (around 3 e1 and 3 e2) and random bases: EM never lowers sum_n log sum_k exp(l x_n.mu_k)
    g = torch.Generator().manual_seed(0)
    centres = torch.cat([3 * torch.eye(8)[:, :1].repeat(1, 10), 3 * torch.eye(8)[:, 1:2].repeat(1, 10)], 1)
    x = (centres + 0.3 * torch.randn(8, 20, generator=g))[None]
    mu = torch.nn.functional.normalize(torch.randn(1, 8, 3, generator=g), dim=1)
    values = []
    for _ in range(5):
        _, _, mu = em_step(x, mu, 2.0, True, 1e-6)
        values.append(float(torch.logsumexp(2.0 * x.transpose(1, 2) @ mu, 2).mean()))
    assert all(b >= a - 1e-9 for a, b in zip(values, values[1:])) and values[-1] > values[0]


def test_gradient_cut_blocks_the_em_path_only():
    model = _tiny("generic", context="ema", context_kw={"num_bases": 4, "num_stages": 1})
    g = measure.measure_gradients(model, _batches(1, 32), 255)
    assert g["grad_backbone_cut"] > 0 and g["grad_backbone_exact"] > 0
    assert model.head.context.block.mapper.training is False  # restored
    fcn = measure.measure_gradients(_tiny("fcn"), _batches(1, 32), 255)
    assert fcn["grad_module_in_cut"] == pytest.approx(fcn["grad_module_in_exact"])


def test_report_derives_within_run_differences_and_judges_them():
    from segattn.analyze.report import aggregate

    runs = []
    # eight seeds: the fewest an exact sign-flip test can decide is six (segattn.stats)
    pairs = [(1.0, 5.0), (2.0, 7.0), (1.5, 6.0), (1.0, 5.5), (2.0, 6.0), (1.5, 6.5), (1.0, 5.5), (2.0, 6.5)]
    for seed, (sep1, sep3) in enumerate(pairs):
        base = {"em_stages": 3, "miou_T1": 90.0 + seed, "miou_T3": 91.0 + seed, "pooled_separation_T1": sep1,
                "pooled_separation_T3": sep3, "cf_logits_T1": 1.0 + 0.01 * seed, "cf_logits_T3": 0.5,
                "cf_logits": 0.5 + 0.01 * seed,
                "grad_module_in_cut": 1.0, "grad_module_in_exact": 4.0, "module": "ema", "seed": seed}
        runs += [{**base, "entry": "ema-T3"},
                 {**base, "entry": "ema-T1", "em_stages": 1, "grad_module_in_cut": 2.0, "cf_logits": 1.0 + 0.01 * seed}]
    agg = aggregate(runs)
    t3 = next(e for e in agg["entries"] if e["name"] == "ema-T3")["metrics"]
    assert t3["swap_gain"]["mean"] == pytest.approx(-1.0) and t3["iter_sep_gain"]["mean"] == pytest.approx(4.5)
    assert t3["iter_cf_ratio"]["mean"] < 0.55 and t3["grad_kept"]["mean"] == pytest.approx(0.25)
    claims = {c["id"]: c["verdict"] for c in agg["claims"]}
    assert claims["5i.ema-T3"] == "holds"  # J grows by 4-5 on every seed: interval above 0
    assert claims["5w.ema-T3"] == "does not hold" and claims["5f.ema-T3"] == "does not hold"  # T = 3 carries half
    assert claims["5s.ema-T3"] == "does not hold"  # T = 1 is 1 point worse on every seed
    assert claims["5g.ema-T3"] == "holds"  # 0.25 of the gradient kept against 0.5 at T = 1
    # a dataset without the synthetic cue (CamVid): no counterfactual claims, the others stay
    no_cue = aggregate([{k: v for k, v in r.items() if not k.startswith("cf_")} for r in runs])
    ids = {c["id"] for c in no_cue["claims"]}
    assert "5f.ema-T3" not in ids and "5w.ema-T3" not in ids and {"5i.ema-T3", "5s.ema-T3", "5g.ema-T3"} <= ids


def test_report_judges_the_replication_range_apart():
    from segattn.analyze.report import aggregate, markdown

    runs = []
    for seed in range(16):  # seeds 0..7 hold, 8..15 go the other way
        gain = 2.0 + 0.01 * (seed % 8) if seed < 8 else -1.0 - 0.01 * (seed % 8)
        base = {"em_stages": 3, "module": "ema", "seed": seed, "miou_T1": 90.0 + gain, "miou_T3": 90.0}
        runs += [{**base, "entry": "ema-T3"}, {**base, "entry": "ema-T1", "em_stages": 1}]
    agg = aggregate(runs, split=8)
    assert agg["runs"] == 16 and agg["entries"][0]["seeds"] == list(range(8))
    status = {r["id"]: r for r in agg["replication"]["status"]}
    assert status["5s.ema-T3"]["first"] == "holds"  # swap gain +2 against a null of 1 on seeds 0..7
    assert status["5s.ema-T3"]["second"] == "does not hold"  # -1 on seeds 8..15
    assert status["5s.ema-T3"]["status"] == "not replicated" and agg["replication"]["runs"] == 16
    assert "replication:" in markdown(agg, "cmd")


def test_pyramid_pooling_parts_are_its_pooled_bins():
    """PPM read as map / reverse-map: bases = the pooled bin vectors, reconstruction = the mean over
    bins of U_b P_b X, checked against the modules' pooling/upsampling matrices (another path)."""
    from segattn import create_module
    from segattn.modules.pooling import pooling_matrices

    torch.manual_seed(0)
    ppm = create_module("ppm", 8, bins=(1, 2, 3)).eval()
    x = torch.randn(1, 8, 7, 9)
    feats, bases, rec = measure.lowrank_parts(ppm, x)
    assert bases.shape == (8, 1 + 4 + 9) and feats.shape == rec.shape == (8, 63)
    xt = x[0].reshape(8, -1).double().T  # (N, C)
    ref = sum(u @ (p @ xt) for p, u in (pooling_matrices(7, 9, b, True) for b in (1, 2, 3))) / 3
    assert torch.allclose(rec.double(), ref.T, atol=1e-5)
    assert torch.allclose(bases[:, 0].double(), xt.mean(0), atol=1e-6)  # bin 1 = the global mean
    # a spatially constant input: every base is the same vector, rebuilt exactly
    const = torch.randn(1, 8, 1, 1).expand(1, 8, 6, 6).contiguous()
    feats, bases, rec = measure.lowrank_parts(ppm, const)
    assert M.mean_pairwise_cosine(bases) == pytest.approx(1.0, abs=1e-6)
    assert M.reconstruction_error(feats, rec) == pytest.approx(0.0, abs=1e-6)


def test_apcnet_parts_use_its_pooled_cells_and_affinities():
    """APCNet: bases = the pooled cells of X at every scale, reconstruction = the mean over scales of
    alpha_s (pooling matrix X), rebuilt here from the module's returned affinities."""
    from segattn import create_module
    from segattn.modules.pooling import pooling_matrices

    torch.manual_seed(0)
    apc = create_module("apcnet", 8, pool_scales=(1, 2)).eval()
    x = torch.randn(1, 8, 6, 7)
    feats, bases, rec = measure.lowrank_parts(apc, x)
    assert bases.shape == (8, 5) and rec.shape == (8, 42)
    with torch.no_grad():
        _, factors = apc(x, return_attention=True)
    xt = x[0].reshape(8, -1).double().T
    ref = sum(factors[f"affinity_{s}"][0].double() @ (pooling_matrices(6, 7, s, True)[0] @ xt) for s in (1, 2)) / 2
    assert torch.allclose(rec.double(), ref.T, atol=1e-5)


def test_attention_rows_only_for_weight_distributions():
    """TV distances and cue mass need rows that are weight distributions: Non-local's softmax and the
    convex M_rev M_map of EMA, A2 and Beyond Grids give rows summing to 1; GloRe's and SGR's learned
    linear projections do not, and give none (they once reported TV distances of 478 and 8.6)."""
    from segattn import create_module

    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 10)
    for name in ("nonlocal", "ema", "a2", "graphrep"):
        rows = measure.attention_rows(create_module(name, 16).eval(), x)
        assert rows.shape == (80, 80) and rows.min() >= 0
        torch.testing.assert_close(rows.sum(1), torch.ones(80), atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="knowledge graph"):
        sgr = create_module("sgr", 16)
    for module in (create_module("glore", 16), sgr):
        assert measure.attention_rows(module.eval(), x) is None


def test_at_eval_scale_reproduces_the_engines_single_scale_evaluation():
    """A model evaluated at a third of the image size (CamVid's protocol) is measured on what the engine
    scored: the same mIoU to the last digit, inputs and logits in the image's own pixels, hooks gone after."""
    from segattn.engine.evaluate import evaluate

    model = _tiny("nonlocal")
    batches = [(x, y % 3) for x, y in _batches(2, 48)]
    engine = evaluate(model, batches, 3, scales=[1 / 3])["mIoU"]
    with measure.at_eval_scale(model, 1 / 3):
        got = measure.measure_robustness(model, batches, 3, 255, sigmas=(), eps=())["miou_clean"]
        with measure.capture(measure.context_slot(model)) as st:
            logits = measure.logits_of(model, batches[0][0])
    assert got == pytest.approx(100 * engine, abs=1e-9)
    assert logits.shape[-2:] == (48, 48) and st["in"].shape[-2:] == (2, 2)  # 48 / 3 = 16 px, stride 8
    assert not model._forward_pre_hooks and not model._forward_hooks
    unscaled = measure.measure_robustness(model, batches, 3, 255, sigmas=(), eps=())["miou_clean"]
    assert unscaled == pytest.approx(100 * evaluate(model, batches, 3)["mIoU"], abs=1e-9)


@pytest.mark.parametrize("override", ["eval.mode=slide", "eval.flip=true", "eval.scales=[0.5,1.0]"])
def test_analyze_refuses_an_evaluation_that_is_not_one_whole_pass(override):
    from segattn.analyze.run import eval_scale
    from segattn.engine.config import load_config
    from segattn.errors import SegattnError

    assert eval_scale(load_config("synthetic/fcn_r18_synthetic.yaml", ["eval.scales=[0.5]"])) == 0.5
    extra = ["eval.crop_size=[32,32]", "eval.stride=[16,16]"] if "slide" in override else []
    cfg = load_config("synthetic/fcn_r18_synthetic.yaml", [override, *extra])
    with pytest.raises(SegattnError, match="one whole-image forward"):
        eval_scale(cfg)


def test_segments_under_a_ten_thousandth_of_the_image_are_left_out():
    masks = torch.zeros(1, 200, 200, dtype=torch.long)  # 0.01 % of 40000 px = 4 px
    masks[0, 10, 10:13] = 1  # a 3-px speck: out
    masks[0, 50:52, 50:52] = 1  # 4 px: in
    masks[0, 100:120, 100:120] = 2  # 400 px: in
    images = torch.zeros(1, 3, 200, 200)
    recs = measure.segment_records_of(ConstantModel(), [(images, masks)], 255)
    assert sorted(r["area"] for r in recs) == [4, 400]
    assert len(measure.segment_records_of(ConstantModel(), [(images, masks)], 255, min_fraction=0.0)) == 3


class RecordingModel(PixelModel):
    """PixelModel that keeps every input it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return super().forward(x)


def test_perturbations_are_fractions_of_the_pixel_range():
    """With standardised inputs (pixel_unit = 255 / std per channel) the noise and the FGSM step of each
    channel are sigma and eps times its unit: the same size in pixels whatever the normalisation."""
    from segattn.analyze.run import pixel_unit
    from segattn.engine.config import load_config

    unit = torch.tensor([1.0, 2.0, 4.0])
    model = RecordingModel()
    x = torch.rand(2, 3, 64, 64)
    batches = [(x, x.argmax(1))]
    measure.measure_robustness(model, batches, 3, 255, sigmas=(0.1,), eps=(0.01,), pixel_unit=unit, pgd_steps=())
    clean, noisy, _, adv = model.seen  # clean, noise, FGSM's forward, attacked
    noise_std = (noisy - clean).transpose(0, 1).reshape(3, -1).std(1)
    assert noise_std == pytest.approx(0.1 * unit, rel=0.03)
    step = (adv - clean).abs().transpose(0, 1).reshape(3, -1).amax(1)
    assert step == pytest.approx(0.01 * unit, rel=1e-5)
    camvid = load_config("camvid/compare_camvid.yaml")
    assert pixel_unit(camvid) == pytest.approx(255 / torch.tensor(camvid.data.std))
    assert pixel_unit(load_config("synthetic/fcn_r18_synthetic.yaml")).tolist() == [1.0]  # [0, 1] images


def test_bases_plan_equal_k_entries_have_16_bases():
    """The bases plan's equal-K entries (issue 30), built as the plan builds them (the synthetic head,
    64 channels): EMA, A2, PPM with one 4x4 bin and APCNet with one 4x4 scale all give the analysis
    K = 16 bases (the K of ``gram erank / K``); the original (1, 2, 3, 6) pyramids 50."""
    from segattn.analyze.measure.common import context_slot
    from segattn.compare.plan import entry_config_dict, load_plan
    from segattn.engine import build
    from segattn.engine.config import config_from_dict

    torch.manual_seed(0)
    plan = load_plan("bases")
    entries = {e.name: e for e in plan.entries}
    ks = {}
    for name in ("ema-T1", "a2", "ppm-K16", "apcnet-K16", "ppm", "apcnet"):
        cfg = config_from_dict(entry_config_dict(plan, "small-objects", entries[name], 0, "unused"))
        module = context_slot(build.build_model(cfg.model, 5)).eval()
        x = torch.randn(1, module.in_channels, 16, 16)
        _, bases, _ = measure.lowrank_parts(module, x)
        ks[name] = bases.shape[1]
    assert ks == {"ema-T1": 16, "a2": 16, "ppm-K16": 16, "apcnet-K16": 16, "ppm": 50, "apcnet": 50}


def test_gradient_at_the_feature_map_the_heads_read_hrnet_neck():
    """With a neck (HRNet: its branches resized and concatenated) ``grad_backbone`` is taken at the neck's
    output, the map the heads read, not at the backbone's stride-32 branch: equal to ||dL/df|| computed
    here with f the neck's output."""
    import torch.nn.functional as F

    import segattn

    torch.manual_seed(0)
    model = segattn.create_model("fcn", num_classes=3, backbone="hrnet_w18_small", channels=16).eval()
    assert model.neck is not None
    (images, masks), = _batches(1, 64)
    got = measure.measure_gradients(model, [(images[:1], masks[:1])], 255)["grad_backbone_cut"]
    seen = {}

    def keep(mod, args, out):
        seen["f"] = out[-1] if isinstance(out, (list, tuple)) else out  # returns None: the output is kept

    hook = model.neck.register_forward_hook(keep)
    loss = F.cross_entropy(model(images[:1]).float(), masks[:1], ignore_index=255)
    hook.remove()
    (grad,) = torch.autograd.grad(loss, seen["f"])
    assert got == pytest.approx(float(grad.norm()), rel=1e-5)
