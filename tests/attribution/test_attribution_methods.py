"""saliency(method=...) with Captum instances and callables: equal to Captum, bound to the model."""

import functools
import warnings

import pytest
import torch
from captum.attr import (
    DeepLift,
    GuidedBackprop,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NeuronGradient,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from geomxai.attribution import check_saliency_method, method_name, saliency
from geomxai.models import cnn2


def reduced(attr):
    """The documented reduction: |attribution| summed over channels."""
    return attr.abs().sum(dim=1)


def captum(method, x, y, /, **kwargs):
    """Captum's own attribute, on a copy of x, warnings about requires_grad silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method.attribute(x.clone(), target=y, **kwargs).detach()


@pytest.fixture
def model(tiny_cnn):
    return tiny_cnn.eval()


# ---- one test per Captum method family, against Captum's own attribute


def test_gradient_family_equals_captum(model, images):
    x, y = images
    for method in (Saliency(model), GuidedBackprop(model), DeepLift(model)):
        ours = saliency(model, x, y, method=method, batch_size=4)
        torch.testing.assert_close(ours, reduced(captum(method, x, y)), msg=method_name(method))
        assert ours.shape == (6, 8, 8)


def test_path_family_equals_captum(model, images):
    x, y = images
    method = IntegratedGradients(model)
    kwargs = {"n_steps": 16, "method": "riemann_trapezoid"}
    ours = saliency(model, x, y, method=method, attribute_kwargs=kwargs, batch_size=4)
    torch.testing.assert_close(ours, reduced(captum(method, x, y, **kwargs)))
    # signed reduction too
    ours_sum = saliency(model, x, y, method=method, attribute_kwargs=kwargs, reduce="sum")
    torch.testing.assert_close(ours_sum, captum(method, x, y, **kwargs).sum(dim=1))


def test_perturbation_family_equals_captum(model, images):
    x, y = images
    method = Occlusion(model)
    kwargs = {"sliding_window_shapes": (2, 3, 3), "strides": (2, 2, 2), "baselines": 0.5}
    ours = saliency(model, x, y, method=method, attribute_kwargs=kwargs, batch_size=4)
    torch.testing.assert_close(ours, reduced(captum(method, x, y, **kwargs)))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_layer_family_upsampled_like_captum_users(model, images, mode):
    x, y = images
    method = LayerGradCam(model, model.body[3])  # a 4x4 map for 8x8 images
    ours = saliency(model, x, y, method=method, batch_size=4, interpolate_mode=mode)
    layer_map = captum(method, x, y)
    assert layer_map.shape == (6, 1, 4, 4)
    up = LayerAttribution.interpolate(layer_map, (8, 8), interpolate_mode=mode)
    torch.testing.assert_close(ours, reduced(up))


def test_noise_tunnel_is_seeded_like_a_seeded_captum_call(model, images):
    x, y = images
    method = NoiseTunnel(Saliency(model))
    kwargs = {"nt_samples": 4, "stdevs": 0.2}
    state = torch.get_rng_state()
    ours = saliency(model, x, y, method=method, attribute_kwargs=kwargs, batch_size=None, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    torch.manual_seed(5)
    torch.testing.assert_close(ours, reduced(captum(method, x, y, **kwargs)))
    again = saliency(model, x, y, method=method, attribute_kwargs=kwargs, batch_size=None, seed=5)
    torch.testing.assert_close(ours, again)


def test_neuron_methods_get_no_target(model, images):
    x, y = images
    method = NeuronGradient(model, model.head)
    ours = saliency(model, x, y, method=method, attribute_kwargs={"neuron_selector": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = method.attribute(x.clone(), neuron_selector=3)
    torch.testing.assert_close(ours, reduced(theirs))
    # the gradient of logit 3 is what method="gradient" explains for target 3
    torch.testing.assert_close(ours, saliency(model, x, 3))


# ---- per-sample keyword arguments and the named methods


def test_per_sample_tensors_are_sliced_with_the_batches(model, images):
    x, y = images
    method = IntegratedGradients(model)
    baselines = torch.rand(6, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    kwargs = {"baselines": baselines, "n_steps": 8}
    batched = saliency(model, x, y, method=method, attribute_kwargs=kwargs, batch_size=4)
    whole = saliency(model, x, y, method=method, attribute_kwargs=kwargs, batch_size=None)
    torch.testing.assert_close(batched, whole)
    torch.testing.assert_close(batched, reduced(captum(method, x, y, **kwargs)))
    assert not torch.allclose(
        batched, saliency(model, x, y, method=method, attribute_kwargs={"n_steps": 8})
    )


def test_an_instance_equals_the_named_method(model, images):
    x, y = images
    torch.testing.assert_close(
        saliency(model, x, y, method=Saliency(model)), saliency(model, x, y, method="gradient")
    )


# ---- callables


def gradient_fn(model, x, target):
    x = x.requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    return g


def test_callable_method(model, images):
    x, y = images
    with torch.no_grad():  # grad mode is switched on for the callable
        ours = saliency(model, x, y, method=gradient_fn, batch_size=4)
    torch.testing.assert_close(ours, saliency(model, x, y, method="gradient"))
    assert all(p.grad is None for p in model.parameters())


def test_callable_returning_per_position_maps_and_kwargs(model, images):
    x, y = images

    def per_pixel(model, x, target, *, scale):
        return -scale * gradient_fn(model, x, target).sum(dim=1)  # (b, h, w), signed

    kwargs = {"scale": 2.0}
    signed = saliency(model, x, y, method=per_pixel, attribute_kwargs=kwargs, reduce="sum")
    g = saliency(model, x, y, method="gradient", reduce="sum")
    torch.testing.assert_close(signed, -2.0 * g)
    # one channel: abs_sum is the absolute value
    torch.testing.assert_close(
        saliency(model, x, y, method=per_pixel, attribute_kwargs=kwargs), (2.0 * g).abs()
    )


def test_callable_of_the_wrong_shape_is_refused(model, images):
    x, y = images
    with pytest.raises(ValueError, match=r"returned attributions of shape \(6, 128\).*\(6, 8, 8\)"):
        saliency(model, x, y, method=lambda m, xb, t: xb.flatten(1), batch_size=None)
    with pytest.raises(TypeError, match="must return a tensor"):
        saliency(model, x, y, method=lambda m, xb, t: "not a map")


# ---- binding: an instance built on another model is refused


def test_instance_bound_to_another_model_is_refused(model, images):
    x, y = images
    torch.manual_seed(1)
    other = cnn2(in_channels=2, image_size=8, width=4, feature_channels=2)
    for method in (IntegratedGradients(other), NoiseTunnel(Saliency(other)), Occlusion(other)):
        with pytest.raises(ValueError, match="bound to another model.*Build the method on"):
            saliency(model, x, y, method=method)
    with pytest.raises(ValueError, match=r"LayerGradCam\(model, layer\)"):
        saliency(model, x, y, method=LayerGradCam(other, other.body[0]))
    # the right model but a layer of another one
    with pytest.raises(ValueError, match="not a submodule of the model"):
        saliency(model, x, y, method=LayerGradCam(model, other.body[0]))


def test_functions_and_wrappers_must_call_the_model(model, images, hooks_left):
    x, y = images
    torch.manual_seed(1)
    other = cnn2(in_channels=2, image_size=8, width=4, feature_channels=2).eval()
    with pytest.raises(ValueError, match="never called the model"):
        saliency(model, x, y, method=Saliency(lambda inp: other(inp)))
    assert hooks_left(model) == 0
    # a function that calls the model, a bound method and a wrapper module are accepted
    expected = saliency(model, x, y, method="gradient")
    torch.testing.assert_close(
        saliency(model, x, y, method=Saliency(lambda inp: model(inp))), expected
    )
    torch.testing.assert_close(saliency(model, x, y, method=Saliency(model.forward)), expected)
    wrapped = nn.Sequential(model, nn.Softmax(dim=1))
    probs = saliency(model, x, y, method=Saliency(wrapped))
    assert probs.shape == (6, 8, 8) and not torch.allclose(probs, expected)
    assert hooks_left(model) == 0


@pytest.mark.parametrize(
    ("method", "error", "match"),
    [
        ("gradcam", ValueError, "method must be one of"),
        ("smoothgrd", ValueError, "did you mean 'smoothgrad'"),
        (IntegratedGradients, TypeError, r"not the class: pass IntegratedGradients\(model\)"),
        (nn.Linear(2, 2), TypeError, "the model goes in the first argument"),
        (42, TypeError, r"method must be a method name \(one of \('gradient'"),
        (nn.Linear, TypeError, "got the class Linear, not an Attribution"),
    ],
)
def test_invalid_methods(model, images, method, error, match):
    x, y = images
    with pytest.raises(error, match=match):
        saliency(model, x, y, method=method)


def test_invalid_attribute_kwargs_and_modes(model, images):
    x, y = images
    with pytest.raises(ValueError, match="attribute_kwargs is for a Captum instance"):
        saliency(model, x, y, method="gradient", attribute_kwargs={"abs": True})
    with pytest.raises(ValueError, match=r"must not hold \['target'\]"):
        saliency(model, x, y, method=Saliency(model), attribute_kwargs={"target": 0})
    with pytest.raises(TypeError, match="mapping"):
        saliency(model, x, y, method=Saliency(model), attribute_kwargs=[("abs", True)])
    with pytest.raises(ValueError, match="interpolate_mode must be one of"):
        saliency(model, x, y, method=LayerGradCam(model, model.body[3]), interpolate_mode="linear")
    flat = LayerGradCam(model, model.body[6])  # flattened: no positions to upsample
    with pytest.raises(ValueError, match="must keep positions"):
        saliency(model, x, y, method=flat)


def test_check_saliency_method_names_the_kind_and_the_callers_parameter(model):
    def make(model):
        return Saliency(model)

    assert check_saliency_method("gradient") == "name"
    assert check_saliency_method(NoiseTunnel(Saliency(model))) == "captum"
    assert check_saliency_method(make) == "callable"  # a function of one parameter, no factory
    assert check_saliency_method(make, factories=True) == "factory"
    assert check_saliency_method(Saliency, factories=True) == "factory"
    for argument in ("method", "saliency_method"):
        with pytest.raises(ValueError, match=rf"^{argument} must be one of .*did you mean"):
            check_saliency_method("integrated_gradient", argument=argument)
        with pytest.raises(TypeError, match=rf"^{argument} must be a method name.*got float"):
            check_saliency_method(1.5, argument=argument)
        with pytest.raises(TypeError, match=rf"^{argument} must be a Captum .* not the class"):
            check_saliency_method(Saliency, argument=argument)
    # Only where factories are taken does the message offer one.
    with pytest.raises(TypeError, match="a factory model -> Attribution"):
        check_saliency_method(None, factories=True)
    with pytest.raises(TypeError, match="^(?!.*factory)"):
        check_saliency_method(None)


# ---- model state, hooks, names


@pytest.mark.parametrize("make", [DeepLift, GuidedBackprop, lambda m: LayerGradCam(m, m.body[0])])
def test_model_left_as_it_was(tiny_cnn, images, hooks_left, make):
    x, y = images
    x_before = x.clone()
    tiny_cnn.train()
    tiny_cnn.body[1].eval()
    method = make(tiny_cnn)
    saliency(tiny_cnn, x, y, method=method, batch_size=4)
    assert tiny_cnn.training and not tiny_cnn.body[1].training and tiny_cnn.head.training
    assert hooks_left(tiny_cnn) == 0
    assert torch.equal(x, x_before) and not x.requires_grad


def test_method_names(model):
    def my_fn(model, x, target):
        return x

    class Explainer:
        def __call__(self, model, x, target):
            return x

    assert method_name("integrated_gradients") == "integrated_gradients"
    assert method_name(IntegratedGradients(model)) == "IntegratedGradients"
    assert method_name(NoiseTunnel(Saliency(model))) == "NoiseTunnel(Saliency)"
    assert (
        method_name(NoiseTunnel(IntegratedGradients(model))) == "NoiseTunnel(IntegratedGradients)"
    )
    assert method_name(LayerGradCam(model, model.body[3])) == "LayerGradCam(body.3)"
    assert method_name(LayerGradCam(model.forward, model.body[3])) == "LayerGradCam(body.3)"
    assert method_name(NeuronGradient(model, model.head)) == "NeuronGradient(head)"
    assert method_name(my_fn) == "callable:my_fn"
    assert method_name(functools.partial(my_fn)) == "callable:my_fn"
    assert method_name(lambda m, x, t: x) == "callable:<lambda>"
    assert method_name(Explainer()) == "callable:Explainer"
    with pytest.raises(TypeError, match="method must be"):
        method_name(3)
