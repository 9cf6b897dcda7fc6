"""A step that never waits for the host, and the static-buffer step a CUDA graph captures.

On the CPU a host read costs nothing and so cannot be timed; it is caught instead. Every path
by which a value reaches the host (``.item()``, ``bool()``/``float()``/``int()`` of a tensor,
``.tolist()``, ``.numpy()``, ``.cpu()``, an output shape that depends on the values, an
eigendecomposition, which on CUDA reads its convergence status) or host data reaches a tensor
(``torch.tensor(...)``, a synchronising copy on CUDA) raises inside
:func:`forbid_host_reads`. The CUDA tests (skipped without a GPU) check the same with
``torch.cuda.set_sync_debug_mode("error")`` and compare captured with eager steps.
"""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch
from _internals import DistEnv, refuse_nonfinite
from _internals import train_loop as loop_module
from tiny_runs import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from geomxai.data import load_dataset
from geomxai.train import (
    REGIMES,
    ConfigError,
    CosineSchedule,
    StaticStep,
    TrainConfig,
    TrainForward,
    build_from_spec,
    list_checkpoints,
    model_spec,
    prepare_for_capture,
    read_checkpoint,
    set_lr,
    train,
    train_step,
)

# Operators that hand a value to the host: a Python scalar (.item(), bool(), float(), int()),
# an output whose shape depends on the values, or (eigh) a status the CUDA kernel reads back;
# and a tensor made from host data (torch.tensor, as_tensor, from_numpy), which on a device is a
# copy from pageable host memory that waits for the stream (and cannot be captured).
_HOST_READ_OPS = {
    "lift_fresh",
    "lift_fresh_copy",
    "_local_scalar_dense",
    "equal",
    "nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "_linalg_eigh",
    "linalg_eigh",
    "_linalg_svd",
    "linalg_eig",
    "_linalg_check_errors",  # solve, inv, cholesky, ... with their error checks
}
_TENSOR_METHODS = ("tolist", "numpy", "cpu")


class HostReadError(AssertionError):
    """A tensor's value was read on the host where no read is allowed."""


def _allowed(names: tuple[str, ...]) -> bool:
    """Whether the read comes from a check that reads the host on purpose.

    ``refuse_nonfinite(..., on_accelerator=False)`` (the whitening's NaN refusal in the training
    hot path) reads its flag on the CPU only and skips the test on an accelerator, so it is not a
    read a GPU step makes; ``names`` are the trainer methods that read at their check points.
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "refuse_nonfinite" and frame.f_locals.get("on_accelerator") is False:
            return True
        if code.co_name in names and code.co_filename.endswith("_loop.py"):
            return True
        frame = frame.f_back
    return False


class _Guard(TorchDispatchMode):
    def __init__(self, allow: tuple[str, ...]):
        super().__init__()
        self.allow = allow

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        flagged = name in _HOST_READ_OPS
        if name in ("index", "index_put", "index_put_"):
            # A boolean mask as an index becomes nonzero(): a value-dependent shape.
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            flagged = any(
                i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices or ()
            )
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            flagged = True
        if flagged and not _allowed(self.allow):
            raise HostReadError(f"host read by aten::{name}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def forbid_host_reads(allow: tuple[str, ...] = ()):
    """Raise :class:`HostReadError` on any host read of a tensor's value in the block."""
    # The methods live on torch's C base class; a stand-in set on torch.Tensor shadows them
    # and is deleted afterwards.
    own = {name: torch.Tensor.__dict__.get(name) for name in _TENSOR_METHODS}

    def refusing(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            if not _allowed(allow):
                raise HostReadError(f"host read by Tensor.{name}()")
            return original(self, *args, **kwargs)

        return method

    try:
        for name in _TENSOR_METHODS:
            setattr(torch.Tensor, name, refusing(name))
        with _Guard(allow):
            yield
    finally:
        for name, method in own.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


# ---------------------------------------------------------------------------- the guard itself


def _eigh(t):
    torch.linalg.eigh(t @ t.T + torch.eye(3))


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t.sum().item(),
        lambda t: bool(t.sum() > 0),
        lambda t: float(t.sum()),
        lambda t: int(t.argmax()),
        lambda t: t.tolist(),
        lambda t: t.numpy(),
        lambda t: t.cpu(),
        lambda t: t[t > 0],
        lambda t: t.nonzero(),
        lambda t: torch.equal(t, t),
        _eigh,
        lambda t: t * torch.tensor(2.0),
    ],
    ids=[
        "item",
        "bool",
        "float",
        "int",
        "tolist",
        "numpy",
        "cpu",
        "mask-index",
        "nonzero",
        "equal",
        "eigh",
        "tensor-from-host",
    ],
)
def test_the_guard_catches_every_kind_of_host_read(read):
    t = torch.randn(3, 3)
    with pytest.raises(HostReadError), forbid_host_reads():
        read(t)
    read(t)  # and everything is back as it was


def test_the_guard_lets_device_work_and_the_cpu_only_nan_refusal_through():
    t = torch.randn(4, 3)
    with forbid_host_reads():
        u = (t @ t.T).relu().sum(0)
        u = torch.where(torch.isfinite(u), u, 0.0).topk(2).indices
        refuse_nonfinite(t, on_accelerator=False)  # skipped on an accelerator by design
    assert u.shape == (2,)


# ---------------------------------------------------------------------------- the step


def _config(regime="saliencydecor", **changes) -> TrainConfig:
    values = {"regime": regime, "dataset": "digits", "group_size": 8, "lr": 0.05}
    values.update(changes)
    return TrainConfig(**values)


def _model(config: TrainConfig, device="cpu"):
    spec = model_spec(config, in_channels=1, num_classes=4, image_size=8)
    torch.manual_seed(0)
    return build_from_spec(spec).to(device)


def _batches(n_batches=4, n=16, device="cpu"):
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.rand(n, 1, 8, 8, generator=g).to(device),
            torch.randint(0, 4, (n,), generator=g).to(device),
        )
        for _ in range(n_batches)
    ]


def _sgd(model, config):
    params = [p for p in model.parameters() if p.requires_grad]
    return params, torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


STEP_VARIANTS = [pytest.param(regime, {}, id=regime) for regime in REGIMES] + [
    pytest.param("saliencydecor", {"detach_clean": True}, id="saliencydecor-detached"),
    pytest.param("saliencydecor", {"mask_gradient_mode": "train"}, id="saliencydecor-train"),
    pytest.param(
        "sgt", {"detach_clean": True, "mask_gradient_mode": "train"}, id="sgt-detached-train"
    ),
    pytest.param("saliencydecor", {"decor_kind": "whitened"}, id="saliencydecor-whitened"),
]


@pytest.mark.parametrize(("regime", "changes"), STEP_VARIANTS)
def test_a_step_and_its_nan_flags_read_nothing_on_the_host(regime, changes):
    # As the loop runs a step: the rate set, zero_grad, forward and backward, optimizer.step,
    # and the loss sums and first-NaN flags kept on the device.
    config = _config(regime, whitening_method="newton_schulz", weight_decay=1e-4, **changes)
    model = _model(config)
    params, opt = _sgd(model, config)
    gen = torch.Generator().manual_seed(0)
    step = StaticStep(TrainForward(model), model, opt, config=config, params=params, generator=gen)
    schedule = CosineSchedule(base_lr=config.lr, total_steps=3)
    sums = torch.zeros(5)
    first_bad = torch.full((4,), torch.inf)
    with forbid_host_reads():
        for i, (x, y) in enumerate(_batches(3)):
            set_lr(opt, schedule.lr(i))
            terms = step(x, y)
            sums += terms
            now_bad = torch.where(torch.isfinite(terms[:-1]), torch.inf, float(i + 1))
            first_bad = torch.minimum(first_bad, now_bad)
    assert torch.isfinite(sums).all() and (first_bad == torch.inf).all()


@pytest.mark.parametrize("regime", ["dbn", "saliencydecor"])
def test_a_zca_whitening_step_reads_the_host(regime):
    # Why TrainConfig refuses cuda_graph=true with whitening_method="zca".
    config = _config(regime)
    model = _model(config)
    params, opt = _sgd(model, config)
    step = StaticStep(TrainForward(model), model, opt, config=config, params=params)
    (x, y), *_ = _batches(1)
    with pytest.raises(HostReadError, match="eigh"), forbid_host_reads():
        step(x, y)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _run_config(tmp_path, name="run", **changes) -> TrainConfig:
    return tiny_config(tmp_path / name, **changes)


def test_an_epoch_reads_the_host_only_at_its_checks(tmp_path, digits, monkeypatch):
    # Between the finite-loss checks (every 50 steps on a GPU) and the end of the epoch, the
    # loop's own work (batches, augmentation, rate, step, sums, flags) reads nothing.
    monkeypatch.setattr(loop_module, "check_interval", lambda device: 50)
    real = loop_module.Trainer._train_epoch
    checks = ("_check_finite", "_check_weights_finite", "_epoch_metrics")

    def guarded(self, epoch):
        with forbid_host_reads(allow=checks):
            return real(self, epoch)

    monkeypatch.setattr(loop_module.Trainer, "_train_epoch", guarded)
    config = _run_config(
        tmp_path,
        regime="saliencydecor",
        whitening_method="newton_schulz",
        augment=True,
        channels_last=True,
    )
    train(config, dataset=digits)
    assert sorted(list_checkpoints(tmp_path / "run")) == [0, 1]


# ---------------------------------------------------------------------------- the static step


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("regime", REGIMES)
def test_the_static_step_makes_the_same_updates_as_the_plain_step(regime):
    config = _config(regime, weight_decay=1e-4)
    plain, static = _model(config), _model(config)
    p_params, p_opt = _sgd(plain, config)
    s_params, s_opt = _sgd(static, config)
    p_gen, s_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    step = StaticStep(
        TrainForward(static), static, s_opt, config=config, params=s_params, generator=s_gen
    )
    schedule = CosineSchedule(base_lr=config.lr, total_steps=4)
    for i, (x, y) in enumerate(_batches(4)):
        lr = schedule.lr(i)
        for group in p_opt.param_groups:
            group["lr"] = lr
        p_opt.zero_grad(set_to_none=True)
        want = train_step(
            TrainForward(plain), plain, x, y, config=config, params=p_params, generator=p_gen
        )
        p_opt.step()
        set_lr(s_opt, lr)
        got = step(x, y)
        assert torch.equal(got, want), i
    a, b = _state(plain), _state(static)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not step.captured


def test_the_static_step_refuses_a_batch_of_another_shape():
    config = _config("sgt")
    model = _model(config)
    params, opt = _sgd(model, config)
    step = StaticStep(TrainForward(model), model, opt, config=config, params=params)
    (x, y), *_ = _batches(1)
    step(x, y)
    with pytest.raises(ValueError, match=r"one shape; got images of shape \(8, 1, 8, 8\)"):
        step(x[:8], y[:8])
    with pytest.raises(ValueError, match="warmup must be a positive integer; got warmup=0"):
        StaticStep(TrainForward(model), model, opt, config=config, params=params, warmup=0)


@pytest.mark.gpu
def test_on_cuda_a_step_on_another_device_is_captured_there():
    # torch.cuda.graph captures on the current device's stream; a step on cuda:1 must be
    # captured (and replayed) on cuda:1, or its kernels would run outside the graph.
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    config = _config("saliencydecor", whitening_method="newton_schulz")
    model = _model(config, "cuda:1")
    params, opt = _sgd(model, config)
    prepare_for_capture(opt)
    gen = torch.Generator(device="cuda:1").manual_seed(3)
    step = StaticStep(
        TrainForward(model),
        model,
        opt,
        config=config,
        params=params,
        generator=gen,
        capture=True,
        warmup=2,
    )
    before = _state(model)
    for x, y in _batches(4, device="cuda:1"):
        step(x, y)
    assert step.captured
    assert any(not torch.equal(before[k], v) for k, v in _state(model).items())


def test_capture_is_refused_off_cuda():
    config = _config("regular")
    model = _model(config)
    params, opt = _sgd(model, config)
    with pytest.raises(ValueError, match="capture=True needs every parameter on a CUDA device"):
        StaticStep(TrainForward(model), model, opt, config=config, params=params, capture=True)


def test_prepare_for_capture_makes_the_rate_a_device_tensor_set_in_place():
    config = _config("regular")
    model = _model(config)
    _, opt = _sgd(model, config)
    prepare_for_capture(opt)
    group = opt.param_groups[0]
    rate = group["lr"]
    assert isinstance(rate, torch.Tensor) and rate.dtype == torch.float32
    assert group["fused"] is True and group["foreach"] is False
    set_lr(opt, 0.125)
    assert group["lr"] is rate and float(rate) == 0.125
    # A loaded state dict brings a plain number back; preparing again restores the tensor.
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = 0.25
    opt.load_state_dict(state)
    prepare_for_capture(opt)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    assert float(opt.param_groups[0]["lr"]) == 0.25
    with pytest.raises(TypeError, match="torch.optim.SGD"):
        prepare_for_capture(torch.optim.Adam(model.parameters()))


def test_a_device_rate_follows_the_schedule_and_checkpoints_keep_a_number(
    tmp_path, digits, monkeypatch
):
    # The loop's path for a captured run's optimiser (a tensor rate, the fused kernel), run
    # eagerly on the CPU: set_lr must drive the tensor along the cosine schedule.
    real = loop_module.Trainer._make_optimizer

    def with_tensor_rate(self, payload):
        start = real(self, payload)
        prepare_for_capture(self.optimizer)
        return start

    plain = train(_run_config(tmp_path, "plain", epochs=2), dataset=digits)
    monkeypatch.setattr(loop_module.Trainer, "_make_optimizer", with_tensor_rate)
    tensor = train(_run_config(tmp_path, "tensor", epochs=2), dataset=digits)
    a = read_checkpoint(plain / "checkpoints" / "epoch_0002.pt")
    b = read_checkpoint(tensor / "checkpoints" / "epoch_0002.pt")
    lr = b["optimizer"]["param_groups"][0]["lr"]
    assert isinstance(lr, float) and lr == pytest.approx(a["optimizer"]["param_groups"][0]["lr"])
    for key, value in a["model"].items():
        # float32 rate and fused kernel against float64 and foreach: rounding apart.
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- the config flag


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"device": "cpu"}, r"cuda_graph=true needs a CUDA device; got device='cpu'"),
        ({"device": "cuda", "compile": True}, "cannot be combined with compile=true"),
        (
            {"device": "cuda", "regime": "saliencydecor"},
            "set whitening_method='newton_schulz'",
        ),
        ({"device": "cuda", "regime": "dbn"}, "whitening_method='zca', whose eigendecomposition"),
    ],
)
def test_cuda_graph_settings_that_cannot_be_captured_are_refused(changes, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(cuda_graph=True, **changes)


@pytest.mark.parametrize("regime", REGIMES)
def test_cuda_graph_settings_that_can_be_captured_are_accepted(regime):
    config = TrainConfig(
        cuda_graph=True, device="cuda", regime=regime, whitening_method="newton_schulz"
    )
    assert config.cuda_graph


def test_a_regime_without_whitening_can_be_captured_with_the_default_method():
    assert TrainConfig(cuda_graph=True, regime="sgt", device="auto").whitening_method == "zca"


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' resolves to the GPU here")
def test_a_cuda_graph_run_on_a_cpu_machine_is_refused_before_any_work(tmp_path, digits):
    config = _run_config(tmp_path, cuda_graph=True, device="auto")
    with pytest.raises(ConfigError, match="resolved to cpu. Set cuda_graph=false"):
        train(config, dataset=digits)
    assert not (tmp_path / "run").exists()


def test_a_multi_process_cuda_graph_run_is_refused(tmp_path, digits, monkeypatch):
    monkeypatch.setattr(loop_module, "setup_distributed", lambda name: DistEnv(world_size=2))
    config = _run_config(tmp_path, cuda_graph=True, device="auto")
    with pytest.raises(ConfigError, match="one process; got 2 processes"):
        train(config, dataset=digits)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- CUDA


def _cuda_step(config, *, capture, warmup=2, seed=3):
    model = _model(config, "cuda")
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    params, opt = _sgd(model, config)
    prepare_for_capture(opt)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    net = TrainForward(model, amp=config.amp)
    step = StaticStep(
        net,
        model,
        opt,
        config=config,
        params=params,
        generator=gen,
        capture=capture,
        warmup=warmup,
    )
    return model, opt, gen, step


@pytest.mark.gpu
@pytest.mark.parametrize(("regime", "changes"), STEP_VARIANTS)
def test_on_cuda_a_step_makes_no_host_sync(regime, changes):
    config = _config(regime, whitening_method="newton_schulz", **changes)
    _, opt, _, step = _cuda_step(config, capture=False)
    batches = _batches(4, device="cuda")
    step(*batches[0])  # lazy initialisation (cuBLAS handles, workspaces) may sync
    sums = torch.zeros(5, device="cuda")
    first_bad = torch.full((4,), torch.inf, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, (x, y) in enumerate(batches[1:]):
            set_lr(opt, 0.05 / (i + 1))
            terms = step(x, y)
            sums += terms
            now_bad = torch.where(torch.isfinite(terms[:-1]), torch.inf, float(i + 1))
            first_bad = torch.minimum(first_bad, now_bad)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(sums).all() and (first_bad == torch.inf).all()


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("regime", "changes"),
    [
        *STEP_VARIANTS,
        pytest.param("saliencydecor", {"amp": True, "channels_last": True}, id="bf16-nhwc"),
    ],
)
def test_on_cuda_captured_and_eager_steps_make_the_same_updates(regime, changes):
    config = _config(regime, whitening_method="newton_schulz", weight_decay=1e-4, **changes)
    eager_model, eager_opt, eager_gen, eager = _cuda_step(config, capture=False)
    graph_model, graph_opt, graph_gen, graph = _cuda_step(config, capture=True)
    # Same kernels on other streams: cuBLAS and cuDNN need not be bitwise reproducible across
    # streams, and under bf16 a last-bit difference in a weight can move its rounding.
    tol = {"rtol": 1e-2, "atol": 1e-3} if config.amp else {"rtol": 1e-4, "atol": 1e-5}
    schedule = CosineSchedule(base_lr=config.lr, total_steps=8)
    wants, gots = [], []
    for i, (x, y) in enumerate(_batches(8, device="cuda")):
        if i == 5:  # a new epoch reseeds the masking generator the graph captured
            eager_gen.manual_seed(11)
            graph_gen.manual_seed(11)
        for opt in (eager_opt, graph_opt):
            set_lr(opt, schedule.lr(i))
        wants.append(eager(x, y))
        gots.append(graph(x, y))
    # Compared after the loop: a step's terms must survive the replays that follow it.
    for i, (got, want) in enumerate(zip(gots, wants, strict=True)):
        torch.testing.assert_close(got, want, **tol, msg=f"step {i}")
    assert graph.captured and not eager.captured
    a, b = _state(eager_model), _state(graph_model)
    for key in a:
        torch.testing.assert_close(b[key], a[key], **tol, msg=key)


@pytest.mark.gpu
def test_on_cuda_a_captured_run_trains_like_an_eager_run_and_resumes(tmp_path, digits):
    changes = {
        "device": "cuda",
        "regime": "saliencydecor",
        "whitening_method": "newton_schulz",
        "epochs": 2,
    }
    eager = train(_run_config(tmp_path, "eager", **changes), dataset=digits)
    config = _run_config(tmp_path, "graph", cuda_graph=True, **changes)
    graph = train(config, dataset=digits)
    a = read_checkpoint(eager / "checkpoints" / "epoch_0002.pt")
    b = read_checkpoint(graph / "checkpoints" / "epoch_0002.pt")
    assert isinstance(b["optimizer"]["param_groups"][0]["lr"], float)
    for key, value in a["model"].items():
        # The captured run's optimiser reads a float32 rate: rounding apart, not bitwise.
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    train(config.replace(resume=True, epochs=3), dataset=digits)
    assert sorted(list_checkpoints(graph)) == [0, 1, 2, 3]
