"""The toy training code: diffusion loss terms against closed forms / torch.distributions,
the contrastive loss, and a tiny reproducible training run with resume."""

import math
import re

import numpy as np
import torch

from glide_eval.toy import train as T


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    lv1, lv2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    ours = T.normal_kl(m1, lv1, m2, lv2)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    assert torch.allclose(ours, ref, atol=1e-5)


def test_discretized_likelihood_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_scale in [(0.0, -2.0), (0.9, -4.0), (-1.0, -1.0), (0.3, -6.0)]:
        logp = T.discretized_gaussian_log_likelihood(
            levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        )
        assert abs(float(logp.exp().sum()) - 1) < 1e-6
    # a narrow Gaussian centred on a level gives it nearly all the mass: erf(1 / (255 sigma sqrt 2))
    x = torch.tensor([0.2])
    p = T.discretized_gaussian_log_likelihood(x, x, torch.tensor([math.log(1e-3)])).exp()
    assert abs(float(p) - math.erf(1 / 255 / 1e-3 / math.sqrt(2))) < 1e-6


def test_tables_match_samplers_diffusion():
    from samplers.diffusion import Diffusion

    d = Diffusion.spaced("squaredcos_cap_v2", "")
    tables = T.DiffusionTables("squaredcos_cap_v2")
    x0, noise = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    for i in (0, 17, 999):
        t = torch.full((3,), i)
        assert torch.allclose(tables.q_sample(x0, t, noise), d.q_sample(x0, i, noise), atol=1e-6)


class _Oracle(torch.nn.Module):
    """Predicts the true noise (known from the seeded generator) and a fixed variance value."""

    def __init__(self, noise, v):
        super().__init__()
        self.noise, self.v = noise, v

    def forward(self, x, t, tokens, mask):
        return torch.cat([self.noise, torch.full_like(self.noise, self.v)], 1)


def test_hybrid_loss_mse_and_vb_parts():
    """With the exact eps the model mean is the true posterior mean, so the VLB term is the
    closed-form KL between two Gaussians of equal means: posterior variance vs exp(log_var(v))."""
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    tables = T.DiffusionTables("squaredcos_cap_v2")
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert (t > 0).all()
    for v in (-1.0, 0.0, 1.0):
        _, parts = T.hybrid_loss(_Oracle(noise, v), tables, x0, None, None, torch.Generator().manual_seed(5))
        assert parts["mse"] < 1e-10
        post = tables.t["posterior_log_variance_clipped"][t].double()
        log_var = (v + 1) / 2 * tables.t["log_betas"][t].double() + (1 - v) / 2 * post
        kl_bits = 0.5 * (-1 + log_var - post + (post - log_var).exp()) / math.log(2)
        assert abs(parts["vb"] - float(kl_bits.mean())) < 1e-5 + 1e-3 * float(kl_bits.mean())


class _Offset(torch.nn.Module):
    """Predicts the true noise plus a constant, so every sample's eps MSE is exactly offset**2."""

    def __init__(self, noise, offset):
        super().__init__()
        self.noise, self.offset = noise, offset

    def forward(self, x, t, tokens, mask):
        return torch.cat([self.noise + self.offset, torch.zeros_like(self.noise)], 1)


def test_high_noise_weighting_and_sampling():
    """The eps MSE of a sample at t is weighted by min(1 / alpha_bar_t, max_weight) (closed form
    from the schedule), and `high_noise` redraws that fraction of t from the top 15% of steps."""
    x0 = torch.rand(64, 3, 4, 4) * 2 - 1
    tables = T.DiffusionTables("squaredcos_cap_v2")
    abar = tables.t["sqrt_alphas_cumprod"].double() ** 2
    for max_weight, high_noise in ((1.0, 0.0), (100.0, 0.0), (100.0, 0.5)):
        g = torch.Generator().manual_seed(3)
        t = torch.randint(0, 1000, (64,), generator=g)
        if high_noise:
            hi = torch.randint(850, 1000, (64,), generator=g)
            t = torch.where(torch.rand(64, generator=g) < high_noise, hi, t)
        noise = torch.randn(x0.shape, generator=g)
        loss, parts = T.hybrid_loss(
            _Offset(noise, 0.5), tables, x0, None, None, torch.Generator().manual_seed(3), max_weight, high_noise
        )
        assert abs(parts["mse"] - 0.25) < 1e-6
        weight = (1 / abar[t]).clamp(max=max_weight)
        # loss = mean(weight * mse + vb) and parts["vb"] = mean(vb)
        assert abs(float(loss) - parts["vb"] - 0.25 * float(weight.mean())) < 1e-4 * float(weight.mean())
        if high_noise:
            assert (t >= 850).float().mean() > 0.35  # 0.15 without the redraw


class _Denoiser(torch.nn.Module):
    """Returns the eps that recovers the given x0 from any x_t: (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""

    def __init__(self, x0, tables):
        super().__init__()
        self.x0, self.tables = x0, tables

    def forward(self, x, t, tokens, mask):
        eps = (x - self.tables("sqrt_alphas_cumprod", t) * self.x0) / self.tables("sqrt_one_minus_alphas_cumprod", t)
        return torch.cat([eps, torch.zeros_like(eps)], 1)


def test_shifted_signal_keeps_x0_as_the_target():
    """With `shift`, x_t's signal is displaced by shift * min(1, sqrt((1 - abar) / abar)) and the
    target is still x0: a model recovering x0 has zero eps error, one predicting the drawn noise
    pays exactly (min(1, sqrt(abar / (1 - abar))) * shift)^2."""
    x0 = torch.rand(64, 3, 4, 4) * 2 - 1
    shift = torch.randn(64, 3, 4, 4)
    tables = T.DiffusionTables("linear")
    abar = tables.t["sqrt_alphas_cumprod"].double() ** 2
    _, parts = T.hybrid_loss(
        _Denoiser(x0, tables), tables, x0, None, None, torch.Generator().manual_seed(5), shift=shift
    )
    assert parts["mse"] < 1e-8
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (64,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    _, parts = T.hybrid_loss(_Offset(noise, 0.0), tables, x0, None, None, torch.Generator().manual_seed(5), shift=shift)
    factor = (abar[t] / (1 - abar[t])).clamp(max=1.0).float()
    expected = (factor * (shift**2).mean(dim=(1, 2, 3))).mean()
    assert 0 < (abar[t] < 0.5).sum() < 64  # both regimes are drawn
    assert abs(parts["mse"] - float(expected)) < 1e-5 * float(expected)


def test_contrastive_loss_prefers_aligned_pairs():
    from glide_eval.toy.evalnets import contrastive_loss

    e = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(math.log(10.0))
    aligned = contrastive_loss(e, e, scale)
    shuffled = contrastive_loss(e, e.roll(1, 0), scale)
    assert aligned < shuffled
    # with every pair marked "same" the targets are uniform: loss = log(8) for equal embeddings
    same = torch.ones(8, 8, dtype=torch.bool)
    flat = torch.ones(8, 16)
    assert abs(float(contrastive_loss(flat, flat, scale, same)) - math.log(8)) < 1e-5


def test_tiny_training_is_reproducible_and_resumes(tmp_path, monkeypatch):
    cfg = dict(T.CONFIG["classifier"], n_train=64, steps=6, batch=8)
    monkeypatch.setitem(T.CONFIG, "classifier", cfg)
    monkeypatch.setattr(T, "classifier_accuracy", lambda model, n=0: {})
    torch.set_num_threads(1)
    # in this process (`train` would start a worker process, which the patches below do not reach)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    T._train_stage("classifier", cfg, tmp_path / "a", 1, None)
    # interrupted after 3 steps (resume file written), then resumed: same weights
    real_loop = T._loop

    def interrupted(*args, **kwargs):
        kwargs["save_every"] = 3
        step_fn = args[4]

        def stop_at_4(step):
            if step == 4:
                raise KeyboardInterrupt
            return step_fn(step)

        return real_loop(*args[:4], stop_at_4, *args[5:], **kwargs)

    monkeypatch.setattr(T, "_loop", interrupted)
    try:
        T._train_stage("classifier", cfg, tmp_path / "b", 1, None)
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "b" / ".resume_classifier.pt").is_file()
    monkeypatch.setattr(T, "_loop", real_loop)
    T._train_stage("classifier", cfg, tmp_path / "b", 1, None)
    a = torch.load(tmp_path / "a" / "classifier.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "classifier.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / ".resume_classifier.pt").exists()
    import json

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    entry = manifest["files"]["classifier.pt"]
    from storage import sha256_file

    assert entry["sha256"] == sha256_file(tmp_path / "a" / "classifier.pt") and entry["config"]["steps"] == 6
    import csv

    rows = list(csv.DictReader(open(tmp_path / "a" / "train_log_classifier.csv")))
    assert [int(r["step"]) for r in rows] == [0, 5] and np.isfinite([float(r["loss"]) for r in rows]).all()


def test_parallel_jobs_train_the_same_weights(tmp_path, monkeypatch):
    """--jobs 2 (spawned workers, one thread each) writes the same files as one sequential run,
    and both stages land in one manifest."""
    import json

    for stage in ("classifier", "clip"):
        monkeypatch.setitem(T.CONFIG, stage, dict(T.CONFIG[stage], n_train=64, steps=4, batch=8))
    T.train(tmp_path / "seq", ["classifier", "clip"], threads=1, jobs=1)
    T.train(tmp_path / "par", ["classifier", "clip"], threads=1, jobs=2)
    for name in ("classifier.pt", "clip.pt"):
        assert (tmp_path / "seq" / name).read_bytes() == (tmp_path / "par" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "par" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"classifier.pt", "clip.pt"}
    assert manifest["files"]["clip.pt"]["config"]["steps"] == 4


def test_training_data_is_the_same_with_or_without_the_render_cache(tmp_path):
    """Same values AND the same memory layout: renders are a transposed view, and strides change
    which conv kernels run, so a cache hit used to train different weights' bits than a render."""
    rendered = T._cached_dataset(8, "train", 16, None)
    T._cached_dataset(8, "train", 16, tmp_path)  # writes the cache
    cached = T._cached_dataset(8, "train", 16, tmp_path)  # reads it
    assert np.array_equal(rendered[0], cached[0]) and rendered[1] == cached[1]
    assert rendered[0].strides == cached[0].strides and rendered[0].flags["C_CONTIGUOUS"]


def test_noised_clip_stage_is_reproducible_and_logs_retrieval_by_noise(tmp_path, monkeypatch, capfd):
    """The same noised-CLIP config gives the same bits, and the manifest and the log hold its
    caption retrieval at every noise level of RETRIEVAL_TIMESTEPS."""
    import json

    cfg = dict(T.CONFIG["noised_clip"], n_train=32, steps=3, batch=8)
    monkeypatch.setitem(T.CONFIG, "noised_clip", cfg)
    monkeypatch.setattr(T.clip_retrieval_accuracy, "__defaults__", (20, 10))
    T.train(tmp_path / "a", ["noised_clip"], threads=1)
    T.train(tmp_path / "b", ["noised_clip"], threads=1)
    a = torch.load(tmp_path / "a" / "noised_clip.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "noised_clip.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    entry = json.loads((tmp_path / "a" / "manifest.json").read_text())["files"]["noised_clip.pt"]
    retrieval = entry["metrics"]["val_retrieval"]
    assert list(retrieval) == [f"t{t}" for t in T.RETRIEVAL_TIMESTEPS]
    assert all(0 <= r["top1"] <= 1 and 0 < r["chance"] < 1 for r in retrieval.values())
    log = capfd.readouterr().err
    for t in T.RETRIEVAL_TIMESTEPS:  # signal left: sqrt(alpha_bar) of the cosine schedule after step t
        signal = math.cos(((t + 1) / 1000 + 0.008) / 1.008 * math.pi / 2) / math.cos(0.008 / 1.008 * math.pi / 2)
        assert re.search(rf"t{t}  signal {signal:.3f}  top1 {retrieval[f't{t}']['top1']:.3f}", log), log


def _tiny(monkeypatch, stage="classifier"):
    monkeypatch.setitem(T.CONFIG, stage, dict(T.CONFIG[stage], n_train=64, steps=4, batch=8))


def _has_avx2() -> bool:
    flags = [line for line in open("/proc/cpuinfo") if line.startswith("flags")]
    return bool(flags) and "avx2" in flags[0].split()


def test_weight_file_bytes_do_not_depend_on_its_name(tmp_path):
    """torch.save names its zip archive's root folder after the file it writes; save_weights'
    bytes must depend only on the tensors (the atomic writer's temporary name is random)."""
    import zipfile

    from glide_eval.toy import models as M

    torch.manual_seed(0)
    model = M.build("classifier", M.CLASSIFIER_OPTIONS)
    M.save_weights(model, "classifier", M.CLASSIFIER_OPTIONS, tmp_path / "classifier.pt")
    M.save_weights(model, "classifier", M.CLASSIFIER_OPTIONS, tmp_path / "sub" / "another name.pt")
    assert (tmp_path / "classifier.pt").read_bytes() == (tmp_path / "sub" / "another name.pt").read_bytes()
    assert {n.split("/")[0] for n in zipfile.ZipFile(tmp_path / "classifier.pt").namelist()} == {"archive"}


def test_kernel_pins_and_the_worker_environment(monkeypatch):
    avx2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    portable = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
    assert T.kernel_pins("x86_64", avx2=True) == avx2
    assert T.kernel_pins("AMD64", avx2=False) == portable
    assert T.kernel_pins("aarch64", avx2=True) == {} and T.kernel_pins("arm64") == {}
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # inherited settings never reach a worker
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    assert T.worker_env(avx2)["MKL_CBWR"] == "AVX2"
    env = T.worker_env({})
    assert not set(T.PIN_VARIABLES) & set(env)
    from pathlib import Path

    root, rest = env["PYTHONPATH"].split(":")
    assert (Path(root) / "glide_eval" / "toy" / "train.py").samefile(T.__file__) and rest == "/somewhere"


def test_a_stage_retrains_to_identical_bytes_in_a_pinned_worker(tmp_path, monkeypatch):
    """The same stage trained twice into differently named folders (each in a worker process):
    byte-identical weights and log, and the manifest says which kernels and machine trained it."""
    import json
    import platform

    from storage import sha256_file

    _tiny(monkeypatch)
    T.train(tmp_path / "first", ["classifier"], threads=1)
    T.train(tmp_path / "second run", ["classifier"], threads=1)
    for name in ("classifier.pt", "train_log_classifier.csv"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second run" / name).read_bytes(), name
    entries = [
        json.loads((tmp_path / d / "manifest.json").read_text())["files"]["classifier.pt"]
        for d in ("first", "second run")
    ]
    assert entries[0]["sha256"] == entries[1]["sha256"] == sha256_file(tmp_path / "first" / "classifier.pt")
    cpu = entries[0]["cpu"]
    assert cpu["machine"] == platform.machine() and entries[0]["threads"] == 1
    assert entries[0]["versions"]["torch"] == torch.__version__
    if platform.machine() == "x86_64" and _has_avx2():  # the pin took: AVX2 kernels also on an AVX512 CPU
        assert cpu["capability"] == "AVX2"
        assert cpu["pins"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    model = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    if model:  # Linux on x86
        assert cpu["model"] == model[0]


def test_verify_reports_equal_and_then_the_changed_tensor(tmp_path, monkeypatch):
    """`toy-models --verify` retrains into a temporary folder: equal for a stage just trained;
    after one weight of the shipped file is zeroed, "differs" by exactly that weight's size."""
    import io
    import json

    from click.testing import CliRunner

    from glide_eval.cli import main
    from storage import sha256_file

    _tiny(monkeypatch)
    shipped = tmp_path / "shipped"
    T.train(shipped, ["classifier"], threads=1)
    args = ["toy-models", "--verify", "--stages", "classifier", "--out", str(shipped), "--jobs", "1"]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)["classifier"]
    original = sha256_file(shipped / "classifier.pt")
    assert report["equal"] and report["max_abs_diff"] == 0.0 and report["same_config"]
    assert report["shipped_sha256"] == report["rebuilt_sha256"] == report["manifest_sha256"] == original

    blob = torch.load(shipped / "classifier.pt", weights_only=True)
    key = next(k for k, v in blob["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    flat = blob["state_dict"][key].view(-1)
    i = int(flat.abs().argmax())
    changed = float(flat[i].abs())
    flat[i] = 0.0
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    (shipped / "classifier.pt").write_bytes(buffer.getvalue())
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert changed > 0 and f"classifier: differs (max parameter difference {changed:.3g})" in res.output
    assert f"shipped {sha256_file(shipped / 'classifier.pt')}" in res.output and f"rebuilt {original}" in res.output
    assert f"not the one its manifest lists ({original})" in res.output

    res = CliRunner().invoke(main, ["toy-models", "--verify", "--stages", "clip", "--out", str(shipped)])
    assert res.exit_code == 2 and "no entry for clip.pt" in res.output and "manifest.json" in res.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    res = CliRunner().invoke(main, ["toy-models", "--verify", "--out", str(tmp_path / "broken")])
    assert res.exit_code == 2 and "not a toy-models manifest" in res.output and "--out" in res.output


def test_portable_pins_train_on_default_kernels_and_a_pin_that_does_not_take_stops_the_worker(
    tmp_path, monkeypatch, capfd
):
    """The pre-AVX2 pins run the worker on torch's DEFAULT kernels (as recorded); a capability
    torch ignores (it warns and keeps the CPU's own level) fails the stage before training."""
    import json
    import platform

    import pytest

    if platform.machine() != "x86_64":
        pytest.skip("the pins apply to x86 only")
    _tiny(monkeypatch)
    portable = T.kernel_pins("x86_64", avx2=False)
    monkeypatch.setattr(T, "kernel_pins", lambda: portable)
    T.train(tmp_path / "portable", ["classifier"], threads=1)
    cpu = json.loads((tmp_path / "portable" / "manifest.json").read_text())["files"]["classifier.pt"]["cpu"]
    assert cpu["capability"] == "DEFAULT" and cpu["pins"] == portable
    monkeypatch.setattr(T, "kernel_pins", lambda: {"ATEN_CPU_CAPABILITY": "sse9"})
    with pytest.raises(RuntimeError, match="'classifier': its training process failed"):
        T.train(tmp_path / "bad", ["classifier"], threads=1)
    assert "ATEN_CPU_CAPABILITY=sse9 did not take" in capfd.readouterr().err
    assert not (tmp_path / "bad" / "classifier.pt").exists()
