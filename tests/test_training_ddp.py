"""torchrun with two gloo processes on CPU: training steps and sharded evaluation match one process.

Comparison made exact where the arithmetic is the same:

* training: one process with ``grad_accum=2`` (two micro-batches of 2) against two processes with
  micro-batches of 2 and DDP gradient averaging. Both compute the same per-micro-batch gradients,
  scale them by 1/2 (exact) and add the two (one fp32 addition, commutative), so weights, projector
  and per-step losses must agree **bitwise**. STCA runs with ``mask_rate=0`` here: with masking,
  each process draws its own train-time masks from its RNG, so the two runs would (legitimately)
  see different masks. Data order and augmentation are functions of (seed, epoch, clip index).
* evaluation: every video is encoded alone (one forward per video), so the gathered logits must
  be **bitwise** equal to the single-process ones.

Everything runs single-threaded (OMP_NUM_THREADS=1) so both sides use the same CPU kernels.
"""

import json

import torch
from helpers import report
from training_fixtures import run_python, tiny_checkpoint, tiny_dataset, tiny_recipe

from stdd_fast.checkpoints import read_state_dict

# Training then evaluation in one launch. Under torchrun the driver owns one process group that
# both commands join (re-creating a group in the same processes races on the rendezvous keys).
DRIVER = """
import os, sys
import torch.distributed as dist
from stdd_fast.training import eval as ev, train as tr
if "WORLD_SIZE" in os.environ:
    dist.init_process_group("gloo")
sep = sys.argv.index("--")
assert tr.main(sys.argv[1:sep]) == 0
assert ev.main(sys.argv[sep + 1:]) == 0
if dist.is_initialized():
    dist.destroy_process_group()
"""


def _eval_args(ds, checkpoint, out):
    return [
        *("--weights", str(checkpoint), "--csv", str(ds.csv), str(ds.csv), "--prefix", str(ds.prefix)),
        *("--classes-file", str(ds.classes), "--views", "2", "--frames", "4", "--device", "cpu"),
        *("--output", str(out), "--save-logits", "--no-progress", "--no-plot"),
    ]


def test_two_process_torchrun_matches_single_process(tmp_path):
    ds = tiny_dataset(tmp_path / "data")
    ckpt = tiny_checkpoint(tmp_path / "init.safetensors")
    recipe = tiny_recipe(
        ds, ckpt, tmp_path / "unused", epochs=2, stca={"mask_rate": 0.0}, num_workers=1, average="none"
    )
    recipe_file = recipe.save(tmp_path / "recipe.json")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    single, multi = tmp_path / "single", tmp_path / "multi"
    train_args = ["--recipe", str(recipe_file), "--no-progress"]
    single_eval = _eval_args(ds, single / "checkpoint_epoch_00002.pt", single / "eval")
    run_python([str(driver), *train_args, f"output_dir={single}", "grad_accum=2", "--", *single_eval])
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    multi_eval = _eval_args(ds, multi / "checkpoint_epoch_00002.pt", multi / "eval")
    run_python([*torchrun, str(driver), *train_args, f"output_dir={multi}", "--", *multi_eval])

    # training: same per-step losses and the same final weights, bit for bit
    steps = [[json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()] for d in (single, multi)]
    assert len(steps[0]) == 4 and [s["loss"] for s in steps[0]] == [s["loss"] for s in steps[1]]
    a = torch.load(single / "checkpoint_epoch_00002.pt", weights_only=True)
    b = torch.load(multi / "checkpoint_epoch_00002.pt", weights_only=True)
    assert b["training"]["world_size"] == 2 and len(b["training"]["rng"]) == 2
    diffs = [(a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]]
    diffs += [(v - b["training"]["projector"][k]).abs().max().item() for k, v in a["training"]["projector"].items()]
    worst = report("2-process DDP vs 1 process (grad_accum=2) final weights, max abs diff", max(diffs))
    assert worst == 0.0
    init = read_state_dict(ckpt)[0]["visual.conv1.weight"]
    assert not torch.equal(a["model"]["visual.conv1.weight"], init)  # the steps did train

    # evaluation: sharded logits gathered in list order equal the single-process ones
    rep = [json.loads((d / "eval" / "report.json").read_text()) for d in (single, multi)]
    assert rep[1]["config"]["world_size"] == 2 and rep[0]["config"]["world_size"] == 1
    for i in (1, 2):
        la = torch.load(single / "eval" / f"logits_split{i}.pt", weights_only=True)
        lb = torch.load(multi / "eval" / f"logits_split{i}.pt", weights_only=True)
        assert la["paths"] == lb["paths"] and torch.equal(la["labels"], lb["labels"])
        err = (la["logits"] - lb["logits"]).abs().max().item()
        assert report(f"sharded vs single-process eval logits, split {i}, max abs diff", err) == 0.0
    for key in ("top1", "top5", "mean_class_accuracy", "per_class", "confusion"):
        assert rep[0]["splits"][0][key] == rep[1]["splits"][0][key]
    assert rep[0]["mean"] == rep[1]["mean"] and rep[0]["std"] == rep[1]["std"]
