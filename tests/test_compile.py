"""torch.compile of the LSQ quantizers and a quantized ViT: no graph breaks inside our code, same numbers as eager."""
import pytest, torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from qvit_nb.lsq import lsq_composed, lsq_quantize
from qvit_nb.quant import QConfig
from qvit_nb.qmodules import quantize_model


def tiny_vit():
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)


def test_quantized_vit_has_no_graph_breaks():
    torch.manual_seed(0)
    m = quantize_model(tiny_vit(), wq=QConfig(bits=2), aq=QConfig(bits=2), qmodules="attn")
    x = torch.randn(4, 3, 32, 32)
    m(x)  # initialise the steps: compiled graphs then see a fixed python flag
    explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
def test_compiled_lsq_matches_eager_forward_and_gradients():
    torch.manual_seed(0)
    torch._dynamo.reset()
    x = torch.randn(64, 32)
    step = torch.tensor(0.3)

    def run(fn):
        xg, sg = x.clone().requires_grad_(), step.clone().requires_grad_()
        y = fn(xg, sg, 1, 1, 0.05)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        return y.detach(), xg.grad, sg.grad

    eager, compiled = run(lsq_quantize), run(torch.compile(lsq_quantize, backend="inductor", fullgraph=True))
    assert torch.equal(compiled[0], eager[0])                   # the forward is exact under compile too
    assert compiled[1].abs().sum() > 0 and compiled[2].abs() > 0  # a compiled backward once returned zeros (CUDA)
    for a, b in zip(eager[1:], compiled[1:]):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_compiled_composed_lsq_matches_the_function():
    "The form compiled GPU graphs use, compiled here on the CPU: exact forward, the function's gradients."
    torch.manual_seed(0)
    torch._dynamo.reset()
    x, step = torch.randn(64, 32) * 2, torch.tensor(0.3)

    def run(fn):
        xg, sg = x.clone().requires_grad_(), step.clone().requires_grad_()
        y = fn(xg, sg, 2, 1, 0.05, False)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        return y.detach(), xg.grad, sg.grad

    eager, compiled = run(lsq_quantize), run(torch.compile(lsq_composed, backend="inductor", fullgraph=True))
    assert torch.equal(compiled[0], eager[0])
    for a, b in zip(eager[1:], compiled[1:]):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_compiled_quantized_vit_trains_like_eager():
    torch.manual_seed(0)
    m = quantize_model(tiny_vit(), wq=QConfig(bits=2), aq=QConfig(bits=2), qmodules="attn").eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    m(x)
    compiled = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-4)
    F.cross_entropy(compiled(x), y).backward()
    got = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    F.cross_entropy(m(x), y).backward()
    for n, p in m.named_parameters():              # every gradient, the quantizer steps included, as in eager
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-7, msg=n)
    assert all(p.grad.abs().sum() > 0 for n, p in m.named_parameters() if n.endswith('.step'))


def test_compiled_student_gives_the_embedding_stream_of_one_pass():
    """A compiled model ignores hooks added after compiling: embedding KD reaches our compiled student through its
    forward."""
    import timm
    import qvit_nb.models  # noqa: F401  (registers vit_2_4_32)
    from qvit_nb.distill import forward_with_embeddings
    torch.manual_seed(0)
    torch._dynamo.reset()
    m = timm.create_model('vit_2_4_32').eval()
    x = torch.randn(4, 3, 32, 32)
    out, stream = forward_with_embeddings(m, x)                               # eager: forward_intermediates
    c_out, c_stream = forward_with_embeddings(torch.compile(m, backend='eager'), x)
    assert len(c_stream) == len(stream) == 2 + 2
    torch.testing.assert_close(c_out, out)
    for a, b in zip(c_stream, stream): torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_a_compiled_run_on_the_cpu_records_its_compile(tmp_path, tiny_config):
    """A real `torch.compile` of a 2-bit-activation run on the CPU (06_train shows the same lines with a stand-in, as
    compiling takes 10-30 s): the plan says it, the first step's time is printed and recorded in metrics.json."""
    import contextlib, io, re
    from qvit_nb.train import train
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        m = train(**{**tiny_config, 'log_interval': 1}, output=str(tmp_path), experiment='compiled', compile=True,
                  aq_enable=True, aq_bitw=2)
    lines = out.getvalue().splitlines()
    assert lines[1].endswith(', compiled (compile true)') and lines[2].startswith('torch.compile: compiling'), lines
    took = float(re.fullmatch(r'torch.compile: the first step took (\d+\.\d) s \(compiling\)', lines[3]).group(1))
    assert (m['status'], m['compiled'], round(m['compile_seconds'], 1)) == ('finished', True, took), m
