"""Temporary device check for validate.model (deleted after use)."""
import sys, time
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), flush=True)
if not torch.cuda.is_available():
    sys.exit(0)
from dicesim.models import get_model
from validate.model import DiTMoE, copies_to_rows, combine_copies
from validate.experts import ExpertBank
dev = "cuda"
g = torch.Generator().manual_seed(0)
s = torch.rand(100000, 16, generator=g).softmax(-1).to(dev)
v, i = torch.topk(s, 2, sorted=False)
print("raw cuda topk(sorted=False) copy0<copy1 fraction", (v[:, 0] < v[:, 1]).float().mean().item())
for name, E in (("small", 8), ("small", 16)):
    p = get_model(name, num_experts=E)
    for dtype in (torch.float32, torch.bfloat16):
        m = DiTMoE(p, latent_side=16, seed=1).eval().to(dev, dtype)
        x = torch.randn(4, 4, 16, 16, generator=g).to(dev); t = torch.rand(4, generator=g).to(dev); y = torch.randint(0, 11, (4,), generator=g).to(dev)
        with torch.no_grad():
            xb, c = m.embed(x.to(dtype), t, y)
            ok_order, ok_exact = True, True
            for L, blk in enumerate(m.blocks):
                mod = blk.modulation(c); xa = blk.attention_half(xb, c, mod=mod)
                h, gate = blk.moe_input(xa, c, mod=mod)
                idx, sc = blk.route(h)
                _, ri = torch.topk(torch.nn.functional.linear(h, blk.moe.gate.weight).float().softmax(-1), 2, sorted=False)
                ok_order &= bool((sc[:, 0] >= sc[:, 1]).all())
                rows, ids = copies_to_rows(h, idx); out = torch.empty_like(rows)
                for r in range(2):
                    bank = ExpertBank(p, [e for e in range(E) if e % 2 == r], layer=L, seed=1).to(dev, dtype)
                    mine = ids % 2 == r; out[mine] = bank.forward_rows(rows[mine], ids[mine])
                xs = blk.moe_output(xa, combine_copies(out.view(*idx.shape, -1), sc), blk.shared_expert(h), gate)
                xr = blk(xb, c)
                ok_exact &= torch.equal(xs, xr)
                xb = xr
            full = m(x.to(dtype), t, y)
        cpu = DiTMoE(p, latent_side=16, seed=1).eval()
        with torch.no_grad():
            ref = cpu(x.cpu(), t.cpu(), y.cpu())
        err = ((full.float().cpu() - ref).norm() / ref.norm()).item()
        print(f"{name} E={E} {dtype}: copy0>=copy1 {ok_order} split==mono exact {ok_exact} rel err vs cpu fp32 {err:.2e}", flush=True)
