"""A run's actors are checked against the cluster before Ray is asked to place them (pure: no Ray)."""

from __future__ import annotations

import pytest

from conftest import TINY, compose_typed, with_changes

from fedray.errors import FedrayError
from fedray.federation.feasibility import check_fits, gpu_request_line, run_bundles


def test_a_run_requests_a_driver_and_one_bundle_per_hospital_actor(tmp_path):
    cfg = compose_typed(TINY, tmp_path)
    bundles = run_bundles(cfg, gpus_present=True)
    assert bundles == [{"CPU": 0.25, "GPU": 0.1}] + [{"CPU": 0.25, "GPU": 0.15}] * 5
    assert run_bundles(cfg, gpus_present=False) == [{"CPU": 0.25}] * 6
    assert len(run_bundles(with_changes(cfg, mode="centralized"), gpus_present=False)) == 2


def test_an_impossible_cpu_request_is_refused_naming_the_knob(tmp_path):
    laptop = [{"CPU": 2.0, "memory": 8e9}]
    check_fits(run_bundles(compose_typed(TINY, tmp_path), gpus_present=False), laptop)
    greedy = compose_typed([*TINY, "resources.hospital.num_cpus=4"], tmp_path)
    with pytest.raises(FedrayError, match=r"this run needs a bundle with CPU=4 but the largest node has CPU=2: "
                                          r"lower resources.hospital.num_cpus"):
        check_fits(run_bundles(greedy, gpus_present=False), laptop)
    crowded = compose_typed([*TINY, "resources.hospital.num_cpus=1"], tmp_path)
    with pytest.raises(FedrayError, match=r"this run needs CPU=5.25 in all but the cluster has CPU=2"):
        check_fits(run_bundles(crowded, gpus_present=False), laptop)


def test_a_memory_reservation_is_requested_and_refused_where_no_node_holds_it(tmp_path):
    laptop = [{"CPU": 2.0, "memory": 8 * 2**30}]
    modest = compose_typed([*TINY, "resources.hospital.memory_gb=1"], tmp_path)
    bundles = run_bundles(modest, gpus_present=False)
    assert bundles[0] == {"CPU": 0.25} and bundles[1:] == [{"CPU": 0.25, "memory": float(2**30)}] * 5
    check_fits(bundles, laptop)
    hungry = compose_typed([*TINY, "resources.hospital.memory_gb=12"], tmp_path)
    with pytest.raises(FedrayError, match=r"a bundle with memory=12 GiB but the largest node has memory=8 GiB: "
                                          r"lower resources.hospital.memory_gb"):
        check_fits(run_bundles(hungry, gpus_present=False), laptop)
    crowded = compose_typed([*TINY, "resources.hospital.memory_gb=2"], tmp_path)
    with pytest.raises(FedrayError, match=r"needs memory=10 GiB in all but the cluster has memory=8 GiB"):
        check_fits(run_bundles(crowded, gpus_present=False), laptop)


def test_gpus_asked_for_on_a_cpu_only_cluster_are_stated(tmp_path):
    cfg = compose_typed(TINY, tmp_path)
    line = gpu_request_line(cfg, gpus_present=False)
    assert line.startswith("resources: the cluster has no GPU") and "resources.hospital.num_gpus=0.15" in line
    assert gpu_request_line(cfg, gpus_present=True) is None
    cpu_only = compose_typed([*TINY, "resources.hospital.num_gpus=0", "resources.driver.num_gpus=0"], tmp_path)
    assert gpu_request_line(cpu_only, gpus_present=False) is None


def test_hospitals_share_as_many_actors_as_a_cpu_only_cluster_has_cpus(tmp_path):
    from fedray.federation.pool import hospital_actor_count

    cfg = compose_typed(TINY, tmp_path)  # 5 hospitals
    assert hospital_actor_count(cfg, cluster_cpus=2) == 2  # a 2-core laptop: two processes, not five
    assert hospital_actor_count(cfg, cluster_cpus=16) == 5  # never more than one per hospital
    assert hospital_actor_count(cfg, gpus_present=True, cluster_cpus=2) == 5  # each caps its own GPU share
    gpu = with_changes(cfg, **{"resources.hospital.num_gpus": 0.2, "resources.driver.num_gpus": 0.1})
    assert hospital_actor_count(gpu, gpus_present=True, cluster_gpus=2) == 5  # five shares fit two GPUs
    big = with_changes(gpu, **{"fl.num_hospitals": 1000})  # 1,000 shares would never be placed: the 9 that fit
    assert hospital_actor_count(big, gpus_present=True, cluster_gpus=2) == 9
    assert hospital_actor_count(cfg) == 5  # the cluster not known
    assert hospital_actor_count(with_changes(cfg, **{"fl.actors": 3}), cluster_cpus=2) == 3
    assert hospital_actor_count(with_changes(cfg, mode="centralized"), cluster_cpus=16) == 1
    assert run_bundles(cfg, gpus_present=False, cluster_cpus=2) == [{"CPU": 0.25}] * 3
