"""A plan whose per-hospital GPU share cannot hold the backbone's training step is refused before any trial."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import backbone

from fedray.errors import FedrayError
from fedray.models.memory import check_memory_fits, estimate_training_memory
from fedray.federation.memory_plan import gpu_memory_bytes

H200 = 141e9


def _estimate(name: str, *, dp_sgd: bool = True, batch_size: int = 32, image_size: int = 128, mode: str = "hooks"):
    return estimate_training_memory(backbone(name), num_classes=9, image_size=image_size, batch_size=batch_size,
                                    optimizer="sgd", dp_sgd=dp_sgd, grad_sample_mode=mode)


def test_per_sample_gradients_dominate_under_dp_sgd():
    vgg = _estimate("vgg19")
    assert vgg.trainable == vgg.parameters > 139e6
    assert vgg.gigabytes > 4 * 32 * 139.6e6 / 1e9  # at least the 17.9 GB of per-sample gradients
    assert _estimate("vgg19", dp_sgd=False).gigabytes < vgg.gigabytes - 17


def test_ghost_clipping_book_keeping_and_smaller_passes_drop_what_they_never_hold():
    hooks, ghost = _estimate("vgg19"), _estimate("vgg19", mode="ghost")
    assert ghost.total_bytes == _estimate("vgg19", dp_sgd=False).total_bytes  # no per-record gradients at all
    bookkeeping = _estimate("vgg19", mode=None)  # what a run picks for 139 M parameters
    assert bookkeeping.total_bytes == _estimate("vgg19", mode="bookkeeping").total_bytes
    assert bookkeeping.total_bytes == ghost.total_bytes + 32 * ghost.activations_per_example * 4  # kept gradients
    assert bookkeeping.total_bytes < hooks.total_bytes / 3
    assert _estimate("small_cnn", mode=None).total_bytes == _estimate("small_cnn").total_bytes  # hooks there
    assert _estimate("vgg19", batch_size=8).gigabytes < hooks.gigabytes / 3  # one pass of 8 records


def test_vgg19_at_the_full_sweeps_share_is_refused_and_the_message_names_a_share_that_fits():
    vgg = _estimate("vgg19")
    with pytest.raises(FedrayError, match=r"vgg19 at 32 records a pass needs about .* resources.hospital.num_gpus="
                                          r"0.09 .* set resources.hospital.num_gpus=(0\.\d+) or more") as err:
        check_memory_fits(vgg, gpu_share=0.09, gpu_bytes=H200, model_name="vgg19", batch_size=32)
    suggested = float(re.search(r"num_gpus=(0\.\d+) or more", str(err.value)).group(1))
    check_memory_fits(vgg, gpu_share=suggested, gpu_bytes=H200, model_name="vgg19", batch_size=32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a local card's size is used first")
def test_resnet50_does_not_fit_a_tenth_of_the_cluster_workers_a10g_but_small_cnn_does():
    a10g = gpu_memory_bytes([{"CPU": 8.0, "GPU": 1.0, "accelerator_type:A10G": 1.0}])
    assert a10g == 24e9
    with pytest.raises(FedrayError, match="resnet50"):
        check_memory_fits(_estimate("resnet50"), gpu_share=0.09, gpu_bytes=a10g, model_name="resnet50",
                          batch_size=32)
    check_memory_fits(_estimate("small_cnn", image_size=32), gpu_share=0.09, gpu_bytes=a10g,
                      model_name="small_cnn", batch_size=32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a local card's size is used first")
def test_unknown_accelerators_give_no_size():
    assert gpu_memory_bytes([{"CPU": 8.0, "GPU": 1.0}]) is None


def test_a_federation_is_refused_by_its_largest_memory_term(tmp_path):
    from conftest import compose_typed
    from fedray.federation.memory_plan import check_federation_memory

    cfg = compose_typed(["data=ehr_synthetic", "model=mlp", "fl.num_hospitals=1000", "fl.clients_per_round=20"],
                        tmp_path)
    gib = 2**30
    # the EHR MLP: a few kB a model, 1,000 shards of a few kB: fits anywhere
    check_federation_memory(cfg, model_bytes=20_000, shard_bytes=[4_000] * 1000, actors=2, resident=8,
                            memory_bytes=4 * gib)
    # a 1 GB model: the driver's round (20 sampled, up to 38 with the Poisson cohort's 4 sigma) cannot fit 24 GiB
    with pytest.raises(FedrayError, match=r"the driver's 38 models \(fl.clients_per_round\)"):
        check_federation_memory(cfg, model_bytes=gib, shard_bytes=[4_000] * 1000, actors=2, resident=1,
                                memory_bytes=24 * gib)
    # the shards themselves: 1,000 hospitals of 30 MB on a 16 GiB machine
    with pytest.raises(FedrayError, match=r"1000 hospitals' shards \(fl.num_hospitals, data\)"):
        check_federation_memory(cfg, model_bytes=20_000, shard_bytes=[30 * 2**20] * 1000, actors=2, resident=8,
                                memory_bytes=16 * gib)
    # the actors' kept hospitals: 8 each of a 500 MB model on two actors
    with pytest.raises(FedrayError, match=r"2 actors keeping 8 hospitals each"):
        check_federation_memory(cfg, model_bytes=gib // 2, shard_bytes=[4_000] * 1000, actors=2, resident=8,
                                memory_bytes=40 * gib)


def test_a_federation_too_big_for_this_machine_is_one_line_before_ray(tmp_path):
    import subprocess
    import sys

    # an MLP of 21 M parameters (82 MB) and up to 370 sampled updates at the driver: about 30 GB
    proc = subprocess.run([sys.executable, "-m", "fedray", "data=ehr_synthetic", "model=mlp",
                           "model.hidden=[20000,1000]", "fl.num_hospitals=400", "fl.clients_per_round=300",
                           "data.num_records=20000", "fl.partition.scheme=iid", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fedray: error: this federation needs at least") and "the driver's" in lines[-1]
    assert "Traceback" not in proc.stderr and "Started a local Ray instance" not in proc.stderr + proc.stdout
