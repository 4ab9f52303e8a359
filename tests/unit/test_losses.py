"""InfoNCE: math on constructed embeddings, and gathered (2 gloo ranks) == single process."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from trace_core.model.losses import (
    combine,
    gather_with_grad,
    info_nce_from_embeddings,
    mean_of_sums,
    token_cross_entropy,
)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_info_nce_matches_formula() -> None:
    q, c = _unit(4, 8, 0), _unit(6, 8, 1)
    loss, _ = info_nce_from_embeddings(q, c, 0.05, gather=False, n_negatives=2)
    s = q @ c.T * 20.0  # temperature 0.05 == scale 20
    ref = -sum(s[i, i] - torch.logsumexp(s[i], 0) for i in range(4)) / 4
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_perfect_alignment_has_low_loss_and_full_accuracy() -> None:
    q = torch.eye(4)
    loss, acc = info_nce_from_embeddings(q, q.clone(), 0.05, gather=False)
    assert acc.item() == 1.0
    assert loss.item() < 3 * math.exp(-20) * 2


def test_negative_count_checked() -> None:
    with pytest.raises(ValueError, match="negative rows"):
        info_nce_from_embeddings(_unit(3, 4, 0), _unit(5, 4, 1), 0.05, gather=False, n_negatives=1)


def test_generation_loss_and_combine() -> None:
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    targets = torch.tensor([0, 1])
    ce = token_cross_entropy(logits, targets)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, targets, reduction="none"))
    assert mean_of_sums([ce.sum()], torch.tensor(2)).item() < 1e-3
    empty = token_cross_entropy(logits[:0], targets[:0]).sum()
    assert mean_of_sums([empty], torch.tensor(0)).item() == 0.0  # no labelled token: L_gen = 0
    total = combine(torch.tensor(2.0), torch.tensor(3.0), 0.5, 2.0, ret_scale=2.0)
    assert total.item() == pytest.approx(0.5 * 2 + 2 * 2 * 3)


def test_gather_is_identity_single_process() -> None:
    t = torch.randn(3, 2)
    assert gather_with_grad(t) is t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, q: torch.Tensor, c: torch.Tensor, n_neg: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = q.shape[0] // world
        nb = n_neg // world
        ql = q[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        pos = c[: q.shape[0]][rank * b : (rank + 1) * b]
        neg = c[q.shape[0] :][rank * nb : (rank + 1) * nb]
        cl = torch.cat([pos, neg]).clone().requires_grad_(True)
        loss, acc = info_nce_from_embeddings(ql, cl, 0.05, gather=True, n_negatives=nb)
        loss.backward()
        out[rank] = (loss.item(), acc.item(), ql.grad.clone(), cl.grad.clone())
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_grads_equal_single_process() -> None:
    world, b, n_neg = 2, 3, 2
    q, c = _unit(world * b, 16, 0), _unit(world * b + n_neg, 16, 1)
    qs, cs = q.clone().requires_grad_(True), c.clone().requires_grad_(True)
    ref, ref_acc = info_nce_from_embeddings(qs, cs, 0.05, gather=False, n_negatives=n_neg)
    ref.backward()
    # spawn, not fork: other tests leave gRPC (Milvus Lite) threads in this process, and a
    # forked child of a threaded gRPC process can deadlock.
    out = mp.get_context("spawn").Manager().dict()
    mp.start_processes(
        _worker, args=(world, _free_port(), q, c, n_neg, out), nprocs=world, join=True, start_method="spawn"
    )
    for rank in range(world):
        loss, acc, gq, gc = out[rank]
        assert loss == pytest.approx(ref.item(), rel=1e-5)
        assert acc == pytest.approx(ref_acc.item())
        torch.testing.assert_close(gq, qs.grad[rank * b : (rank + 1) * b])
        pos_grad = cs.grad[: world * b][rank * b : (rank + 1) * b]
        neg_grad = cs.grad[world * b :][rank : rank + 1]
        torch.testing.assert_close(gc, torch.cat([pos_grad, neg_grad]))


def test_first_labelled_marks_one_decision_per_row() -> None:
    from trace_core.model.losses import first_labelled

    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    assert first_labelled(mask).long().tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_route_accuracy_against_labels() -> None:
    from trace_core.training.callbacks import route_accuracy

    assert route_accuracy(["direct", "reasoned", "forced", "direct"], [0, 1, 0, 1]) == 0.5
    assert route_accuracy([], []) == 0.0
