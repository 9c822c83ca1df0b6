"""The shadow process's idle gate: it works only while the machine has cores to spare."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from serving.shadow_child import IdleGate, machine_sample


class FakeMachine:
    """Idle and own CPU seconds that grow at set rates per second of its clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.idle = 0.0
        self.own = 0.0

    def run(self, seconds: float, idle_cores: float, own_cores: float = 0.0) -> None:
        self.now += seconds
        self.idle += seconds * idle_cores
        self.own += seconds * own_cores

    def sample(self) -> tuple[float, float, float]:
        return self.now, self.idle, self.own


def test_the_gate_closes_on_a_busy_machine_and_opens_when_cores_are_idle():
    machine = FakeMachine()
    gate = IdleGate(0.5, period=0.0, sample=machine.sample)
    machine.run(1.0, idle_cores=1.4)
    assert gate.open()
    machine.run(1.0, idle_cores=0.1)
    assert not gate.open()
    # its own work counts as idle: a child using the idle core does not close its own gate
    machine.run(1.0, idle_cores=0.0, own_cores=0.9)
    assert gate.open()
    machine.run(1.0, idle_cores=0.3, own_cores=0.1)
    assert not gate.open()


def test_the_gate_is_judged_once_per_period():
    machine = FakeMachine()
    gate = IdleGate(0.5, period=3600, sample=machine.sample)
    machine.run(1.0, idle_cores=0.0)
    assert gate.open()  # not judged again within the period


def test_zero_cores_means_always_open_and_no_proc_means_open():
    assert IdleGate(0.0, period=0.0, sample=lambda: None).open()
    assert IdleGate(0.5, period=0.0, sample=lambda: None).open()


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_real_machine_reads_busy_while_every_core_spins():
    cores = multiprocessing.cpu_count()
    gate = IdleGate(0.5, period=0.0, sample=machine_sample)
    spinners = [multiprocessing.Process(target=_spin, args=(1.5,)) for _ in range(cores)]
    for spinner in spinners:
        spinner.start()
    try:
        time.sleep(0.5)
        gate.open()  # the window starts with every core busy
        time.sleep(0.5)
        assert not gate.open()
    finally:
        for spinner in spinners:
            spinner.join()


def test_the_child_keeps_off_the_cpu_its_parent_last_ran_on():
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to move to")
    script = (
        "import os; from serving.shadow_child import ParentAvoider; "
        "a = ParentAvoider(os.getppid()); a.step(); "
        "print(sorted(os.sched_getaffinity(0)), a._avoided)"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split("] ")
    allowed = {int(c) for c in output[0].strip("[").split(",")}
    avoided = int(output[1])
    assert avoided in cpus and allowed == cpus - {avoided}
