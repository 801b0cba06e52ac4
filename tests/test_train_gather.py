"""The caption loss over every rank's batch: two gloo processes on CPU against one process
holding the whole batch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _rank(rank: int, world: int, init: str, sizes: list[int], out: str) -> None:
    import torch.distributed as dist

    from curate.train.model import caption_keys, gathered_contrastive_loss

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        img, txt, captions = _batch(sizes)
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        i = img[lo:hi].clone().requires_grad_(True)
        t = txt[lo:hi].clone().requires_grad_(True)
        loss = gathered_contrastive_loss(i, t, torch.tensor(10.0), caption_keys(captions[lo:hi],
                                                                                 "cpu"))
        loss.backward()
        np.savez(f"{out}/{rank}.npz", loss=loss.item(), gi=i.grad.numpy(), gt=t.grad.numpy())
        dist.barrier()  # neither rank tears the group down while the other still uses it
    finally:
        dist.destroy_process_group()


def _batch(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    img = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    captions = [f"caption {k % 5}" for k in range(n)]  # repeats, across ranks too
    return img, txt, captions


def _global(sizes, rows):
    """The loss of the given rows against the whole batch, and its input gradients."""
    from curate.train.model import caption_keys

    img, txt, captions = _batch(sizes)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    keys = caption_keys(captions, "cpu")
    same = (keys[rows][:, None] == keys[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    li = -(target * torch.log_softmax(10.0 * img[rows] @ txt.T, 1)).sum(1).mean()
    lt = -(target * torch.log_softmax(10.0 * txt[rows] @ img.T, 1)).sum(1).mean()
    return (li + lt) / 2, img, txt


@pytest.mark.parametrize("sizes", [[4, 4], [3, 5]])
def test_every_rank_scores_against_the_whole_batch(sizes, tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank, args=(2, init, sizes, str(tmp_path)), nprocs=2, join=True)
    got = [np.load(tmp_path / f"{r}.npz") for r in range(2)]
    for rank in range(2):
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        want, _, _ = _global(sizes, list(range(lo, hi)))
        assert float(got[rank]["loss"]) == pytest.approx(want.item(), rel=1e-5)
        # each rank's gradient is that of the sum of every rank's loss (the gather's
        # backward sums across ranks), on its own rows
        gi, gt = _grad_of(sizes, lo, hi)
        np.testing.assert_allclose(got[rank]["gi"], gi, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[rank]["gt"], gt, rtol=1e-4, atol=1e-6)


def _grad_of(sizes, lo, hi):
    """Gradients of the sum of every rank's loss, at rows lo:hi."""
    img, txt, captions = _batch(sizes)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    from curate.train.model import caption_keys

    keys = caption_keys(captions, "cpu")
    total, start = 0, 0
    for k in sizes:
        rows = list(range(start, start + k))
        same = (keys[rows][:, None] == keys[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        li = -(target * torch.log_softmax(10.0 * img[rows] @ txt.T, 1)).sum(1).mean()
        lt = -(target * torch.log_softmax(10.0 * txt[rows] @ img.T, 1)).sum(1).mean()
        total = total + (li + lt) / 2
        start += k
    total.backward()
    return img.grad[lo:hi].numpy(), txt.grad[lo:hi].numpy()


def test_one_process_is_the_local_loss():
    from curate.train.model import caption_keys, contrastive_loss, gathered_contrastive_loss

    img, txt, captions = _batch([6])
    keys = caption_keys(captions, "cpu")
    same = keys[:, None] == keys[None, :]
    assert gathered_contrastive_loss(img, txt, torch.tensor(10.0), keys).item() == \
        pytest.approx(contrastive_loss(img, txt, torch.tensor(10.0), same).item())
