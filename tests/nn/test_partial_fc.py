"""Partial FC (``head=partial_fc``): the sharded head equals the full combined-margin head.

One process: with ``sample_rate=1`` the head is the full head; with sampling it is the full head's softmax
over the sampled centres. Two spawned gloo processes (a real ``torch.distributed`` group, the backbone
in DDP as Lightning wraps it): the loss, the embeddings' gradients and the backbone's and centres'
weights after one SGD step equal one process with the full ArcFace head on the same global batch of real
LFW crops. The Lightning runs (``trainer=ddp_cpu``, resume after a kill) are in tests/test_partial_fc_ddp.py.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stn_face.config import CONF_DIR
from stn_face.nn.heads import CombinedMarginHead, margin_logits
from stn_face.nn.partial_fc import (
    PartialFCHead,
    sample_columns,
    shard_range,
    sum_gradients,
    take_shard_from_checkpoint,
)
from tests.helpers import LFW_TRAIN_PEOPLE, prepare_small_lfw

WORLD = 2
PER_RANK = 6  # images per rank: a global batch of 12 real crops
EMBEDDING = 32
MARGINS = {"arcface": dict(s=64.0, m2=0.5), "cosface": dict(s=64.0, m2=0.0, m3=0.35)}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def _network():
    """The spatial transformer (projective, with its localization net) + the tiny backbone."""
    from stn_face.nn.embedding import EmbeddingNet

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["backbone=tiny", f"backbone.embedding_size={EMBEDDING}"])
    return EmbeddingNet(instantiate(cfg.transform), instantiate(cfg.backbone))


def _crops(small_lfw: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: 12 real LFW crops of 10 people (as the training pipeline reads them), labels."""
    from stn_face.data.datamodule import FaceDataModule

    data = FaceDataModule(root=str(small_lfw), identities=LFW_TRAIN_PEOPLE, batch_size=PER_RANK, num_workers=0,
                          max_images_per_identity=6, augment={"hflip": 0.0})
    data.setup("fit")
    picks = [(i * 7) % len(data.train_set) for i in range(WORLD * PER_RANK)]
    images, labels = zip(*(data.train_set[i] for i in picks))
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def small_lfw(lfw_dir) -> Path:
    return prepare_small_lfw(lfw_dir)


# --------------------------------------------------------------------------------------- one process
def test_shards_cover_every_class_once():
    for classes, world in [(10, 1), (10, 3), (7, 7), (2_000_003, 64)]:
        ranges = [shard_range(classes, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == classes
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


@pytest.mark.parametrize("margin", ["arcface", "cosface"])
def test_full_rate_in_one_process_equals_the_full_head(margin):
    torch.manual_seed(0)
    full = CombinedMarginHead(EMBEDDING, 40, **MARGINS[margin])
    torch.manual_seed(0)
    partial = PartialFCHead(EMBEDDING, 40, **MARGINS[margin], sample_rate=1.0)
    assert torch.equal(full.weight, partial.weight)  # the same initial centres from the same seed
    embeddings = torch.randn(16, EMBEDDING, requires_grad=True)
    labels = torch.randint(0, 40, (16,))
    for factor in (1.0, 0.4, 0.0):
        expected, expected_correct = full.loss(embeddings, labels, margin_factor=factor)
        got, correct = partial(embeddings, labels, margin_factor=factor)
        (expected_grad,) = torch.autograd.grad(expected, embeddings)
        (got_grad,) = torch.autograd.grad(got, embeddings)
        assert abs(float(got.detach() - expected.detach())) < 1e-5
        assert _max_diff(got_grad, expected_grad) < 1e-6
        assert torch.equal(correct, expected_correct)
    expected, _ = full.loss(embeddings, labels)
    got, _ = partial(embeddings, labels)
    full_grad = torch.autograd.grad(expected, full.weight)[0]
    # float32 rounding of gradients of size ~10 (s = 64 on random embeddings)
    assert _max_diff(torch.autograd.grad(got, partial.weight)[0], full_grad) < 1e-5


def test_sampled_softmax_is_the_full_heads_over_the_sampled_centres():
    """sample_rate=0.25 of 40 centres: every positive plus random others, 10 in all; the loss is the
    combined-margin softmax over exactly those columns, and only they get gradients."""
    torch.manual_seed(1)
    head = PartialFCHead(EMBEDDING, 40, s=64.0, m2=0.5, sample_rate=0.25, seed=3)
    embeddings = torch.randn(8, EMBEDDING)
    labels = torch.tensor([0, 5, 5, 17, 33, 39, 17, 2])
    loss, correct = head(embeddings, labels, step=11)
    columns = sample_columns(labels, 40, head.num_sample, head._generator(11))
    assert head.num_sample == 10 and columns.numel() == 10
    assert set(labels.tolist()) <= set(columns.tolist()) and torch.equal(columns, columns.sort().values)
    cosine = F.linear(F.normalize(embeddings), F.normalize(head.weight[columns])).clamp(-1, 1)
    targets = torch.searchsorted(columns, labels)
    logits = margin_logits(cosine, targets, 64.0, 1.0, 0.5, 0.0)
    assert abs(float((loss - F.cross_entropy(logits, targets)).detach())) < 1e-5
    assert torch.equal(correct, logits.argmax(1) == targets)
    loss.backward()
    touched = (head.weight.grad.abs().sum(1) > 0).nonzero().squeeze(1)
    assert torch.equal(touched, columns)
    # the sample is a function of (seed, step, rank): the same step draws the same, another step others
    assert torch.equal(sample_columns(labels, 40, 10, head._generator(11)), columns)
    assert not torch.equal(sample_columns(labels, 40, 10, head._generator(12)), columns)


def test_more_positives_than_the_sample_keeps_only_the_positives():
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    columns = sample_columns(labels, 10, 3, torch.Generator().manual_seed(0))
    assert columns.tolist() == [1, 2, 3, 4, 5, 6, 9]


def test_head_config_and_bad_rate():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["head=partial_fc", "head.sample_rate=0.3"])
    head = instantiate(cfg.head)(embedding_size=8, num_classes=20)
    assert isinstance(head, PartialFCHead) and (head.s, head.m2, head.m3) == (64.0, 0.5, 0.0)
    assert head.sample_rate == 0.3 and head.num_sample == 6 and head.seed == cfg.seed
    from stn_face.errors import InputError

    with pytest.raises(InputError, match=r"head\.sample_rate=0"):
        PartialFCHead(8, 20, sample_rate=0.0)


def test_module_puts_the_centres_in_their_own_group(tmp_path):
    from tests.helpers import compose_train

    cfg = compose_train(["backbone=tiny", "head=partial_fc", "head.weight_decay=0.0"], tmp_path)
    model = instantiate(cfg.model, num_classes=10)
    groups = model.parameter_groups()
    assert [g["name"] for g in groups] == ["main", "localization", "sharded_head"]
    assert groups[-1]["params"] == [model.head.weight] and groups[-1]["weight_decay"] == 0.0
    assert all(p is not model.head.weight for g in groups[:-1] for p in g["params"])


# ------------------------------------------------------------------------------------- two processes
def _model(head: str, tmp: str, num_classes: int):
    """StnFaceModule (projective transformer + tiny backbone) with ``head``, built from seed 0."""
    from tests.helpers import compose_train

    cfg = compose_train(["backbone=tiny", f"backbone.embedding_size={EMBEDDING}", f"head={head}", "optimizer.lr=0.1"],
                        Path(tmp))
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=num_classes)


def _optimiser_step(model, loss) -> None:
    """The module's optimisation pieces, as its Lightning hooks call them."""
    optimizer = model.optimizer_factory(params=model.parameter_groups())
    loss.backward()
    assert not model.drop_non_finite_gradients(optimizer)
    model.clip_localization_gradients()
    optimizer.step()
    return optimizer


def _rank_main(rank: int, init_file: str, out_dir: str, images, labels, num_classes: int):
    """One rank: the module with head=partial_fc, sharded (configure_model), in DDP as Lightning wraps it with
    the module's gradient hook; one SGD step; writes what it saw to ``out_dir/rank<r>.pt``."""
    torch.set_num_threads(1)  # the same reduction order as the one-process reference (see the test)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    model = _model("partial_fc", out_dir, num_classes)
    model.configure_model()
    assert model.head.world_size == WORLD and model._ddp_params_and_buffers_to_ignore == ["head.weight"]
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(None, sum_gradients)
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    embeddings = ddp(images[rows])
    embeddings.retain_grad()
    loss, correct = model.head.loss(embeddings, labels[rows], margin_factor=1.0, step=0)
    optimizer = _optimiser_step(model, loss)
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    model.on_save_checkpoint(checkpoint)  # every rank calls it, as Lightning's dump_checkpoint does
    # ... and training goes on with this rank's rows: the optimiser's own state is left alone
    assert optimizer.state[model.head.weight]["momentum_buffer"].shape == model.head.weight.shape
    torch.save({"loss": loss.detach(), "correct": correct, "embedding_grad": embeddings.grad,
                "weights": {k: v.detach().clone() for k, v in model.named_parameters()},
                "checkpoint": checkpoint}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("num_classes", [10, 9])  # 9: unequal shards (5 + 4 rows)
def test_two_gloo_ranks_equal_the_full_head_in_one_process(num_classes, small_lfw, tmp_path, one_thread):
    # one torch thread here and in the ranks: float32 sums in one fixed order on both sides, whatever
    # thread count earlier tests of the session left (with 2 threads against 1 the centres differed by 2.7e-5)
    images, labels = _crops(small_lfw)
    labels = labels % num_classes
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path), images, labels, num_classes), nprocs=WORLD,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    # one process, the full ArcFace head (head=arcface: the same margin, the same initial centres), the same
    # global batch; BatchNorm sees each rank's half on its own, as under DDP (per-device batch statistics
    # are DDP's business, not the head's)
    model = _model("arcface", str(tmp_path), num_classes)
    assert isinstance(model.head, CombinedMarginHead) and model.head.m2 == 0.5
    embeddings = torch.cat([model(images[r * PER_RANK:(r + 1) * PER_RANK]) for r in range(WORLD)])
    embeddings.retain_grad()
    loss, correct = model.head.loss(embeddings, labels, margin_factor=1.0)
    optimizer = _optimiser_step(model, loss)

    weights = dict(model.named_parameters())
    for r, got in enumerate(ranks):
        assert abs(float(got["loss"] - loss.detach())) < 1e-5, (got["loss"], loss)
        assert torch.equal(got["correct"], correct)
        assert _max_diff(got["embedding_grad"], embeddings.grad[r * PER_RANK:(r + 1) * PER_RANK]) < 1e-5
        # the weights (BatchNorm's running statistics saw one half on each rank, both halves here)
        # (float32 sums in another order across ranks: 1.1-1.3e-5 seen with the default half-width localization net)
        worst = max(_max_diff(got["weights"][k], v) for k, v in weights.items() if k != "head.weight")
        assert worst < 5e-5, f"rank {r}: transformer + backbone after one step differ by {worst}"
        shard = slice(*shard_range(num_classes, r, WORLD))
        assert _max_diff(got["weights"]["head.weight"], weights["head.weight"][shard]) < 1e-5
    assert float(embeddings.grad.abs().max()) > 1e-4  # the gradients compared are not all zero
    # the checkpoint rank 0 writes holds the whole matrix and its momentum, in class order, like a full head's
    saved = ranks[0]["checkpoint"]
    assert saved["state_dict"].keys() == model.state_dict().keys()
    assert _max_diff(saved["state_dict"]["head.weight"], weights["head.weight"]) < 1e-5
    (group,) = [g for g in saved["optimizer_states"][0]["param_groups"] if g["name"] == "sharded_head"]
    momentum = saved["optimizer_states"][0]["state"][group["params"][0]]["momentum_buffer"]
    assert momentum.shape == (num_classes, EMBEDDING)
    # momentum after one step is the centres' gradient (up to ~60 here): float32 rounding, relative
    expected = optimizer.state[model.head.weight]["momentum_buffer"]
    assert _max_diff(momentum, expected) < 1e-6 * float(expected.abs().max())
    # ... and each rank takes its own rows back from it
    for r in range(WORLD):
        head = PartialFCHead(EMBEDDING, num_classes)
        head.shard(r, WORLD)
        loaded = {"state_dict": dict(saved["state_dict"]), "optimizer_states": [
            {"state": {7: {"momentum_buffer": momentum}}, "param_groups": [{"params": [7], "name": "sharded_head"}]}]}
        take_shard_from_checkpoint(loaded, head, prefix="head.")
        assert torch.equal(loaded["state_dict"]["head.weight"], ranks[r]["weights"]["head.weight"])
        rows = slice(*shard_range(num_classes, r, WORLD))
        assert torch.equal(loaded["optimizer_states"][0]["state"][7]["momentum_buffer"], momentum[rows])


def test_margin_logits_keep_rows_without_a_target():
    cosine = torch.tensor([[0.5, 0.1], [0.2, 0.3]])
    logits = margin_logits(cosine, torch.tensor([0, -1]), 10.0, 1.0, 0.5, 0.0)
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.5) + 0.5), abs=1e-5)
    assert torch.equal(logits[1], 10 * cosine[1]) and logits[0, 1].item() == pytest.approx(1.0)
