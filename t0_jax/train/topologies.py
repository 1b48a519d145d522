"""TPU slices by name: Cloud TPU names ("v4-128", "v5e-256") and libtpu names ("v4:4x4x4").

A plan (`t0_jax.train.plan`) compiles the train step for a slice this host does not have, from
libtpu's description of the slice (`jax.experimental.topologies.get_topology_desc`, REFERENCE.md
§9). Cloud TPU names count TensorCores for v2, v3, v4 and v5p (2 per chip: v4-128 is 64 chips)
and chips for v5e and v6e; libtpu names give the chip grid. The hardware facts here (HBM and
bf16 peak per chip) are the vendor's datasheet figures; per-device values divide them by the
devices libtpu reports per chip (one per TensorCore on v2-v4, one per chip from v5 on).
"""
from __future__ import annotations

import dataclasses
import os
import re

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation: how its names count and what one chip holds."""

    name: str  # libtpu prefix, e.g. "v4"
    grid_dims: int  # 2-D torus (v2, v3, v5e, v6e) or 3-D (v4, v5p)
    names_count_cores: bool  # Cloud name counts TensorCores (2 per chip) rather than chips
    hbm_per_chip: int  # bytes
    peak_flops_per_chip: float  # dense bf16 FLOP/s
    cloud_sizes: tuple[int, ...]  # the sizes Cloud TPU offers (in its own unit)
    aliases: tuple[str, ...] = ()


def _powers(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(lo.bit_length() - 1, hi.bit_length()))


GENERATIONS = {g.name: g for g in (
    Generation("v2", 2, True, 16 * GIB, 45e12, _powers(8, 512)),
    Generation("v3", 2, True, 32 * GIB, 123e12, _powers(8, 2048)),
    Generation("v4", 3, True, 32 * GIB, 275e12, _powers(8, 4096)),
    Generation("v5p", 3, True, 95 * GIB, 459e12, _powers(8, 8192)),
    Generation("v5e", 2, False, 16 * GIB, 197e12, (1,) + _powers(4, 256), ("v5litepod",)),
    Generation("v6e", 2, False, 32 * GIB, 918e12, (1,) + _powers(4, 256)),
)}
_ALIASES = {alias: g for g in GENERATIONS.values() for alias in (g.name,) + g.aliases}
_CLOUD = re.compile(r"^(v\d+[a-z]*)-(\d+)$")
_LIBTPU = re.compile(r"^(v\d+[a-z]*):(\d+(?:x\d+){1,2})$")


class UnknownTopologyError(ValueError):
    """A --topology name that is neither a Cloud TPU nor a libtpu slice name we know."""


class TopologyUnavailableError(RuntimeError):
    """libtpu is not installed, or it cannot describe the slice."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named slice: what the user typed, libtpu's name for it, and its chip count."""

    requested: str
    generation: Generation
    grid: tuple[int, ...]

    @property
    def libtpu_name(self) -> str:
        return f"{self.generation.name}:{'x'.join(map(str, self.grid))}"

    @property
    def chips(self) -> int:
        n = 1
        for d in self.grid:
            n *= d
        return n

    def device_memory_bytes(self, num_devices: int) -> int:
        """HBM of one jax device (a TensorCore where libtpu lists cores, else a chip)."""
        return self.generation.hbm_per_chip * self.chips // num_devices

    def peak_flops_per_device(self, num_devices: int) -> float:
        return self.generation.peak_flops_per_chip * self.chips / num_devices


def chip_grid(chips: int, dims: int) -> tuple[int, ...]:
    """The usual slice shape for `chips` chips: v4-8 → 2x2x1, v4-32 → 2x2x4, v5e-8 → 2x4."""
    if chips == 4 and dims == 3:
        return (2, 2, 1)
    grid = [1] * dims
    while _product(grid) < chips:
        smallest = min(grid)
        i = max(k for k, d in enumerate(grid) if d == smallest)  # rightmost of the smallest
        grid[i] *= 2
    return tuple(grid)


def _product(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def known_names() -> list[str]:
    """Every Cloud TPU name accepted, then the libtpu form (for error messages and --help)."""
    out = []
    for g in GENERATIONS.values():
        sizes = g.cloud_sizes
        out.append(f"{g.name}-{{{', '.join(map(str, sizes))}}}")
    return out + ["or libtpu's form, e.g. v4:4x4x4, v5e:16x16 (chip grid)"]


def _unknown(name: str, why: str) -> UnknownTopologyError:
    return UnknownTopologyError(
        f"--topology={name!r}: {why}. Known slices: {'; '.join(known_names())}.")


def parse(name: str) -> Topology:
    """Cloud TPU or libtpu name → Topology; unknown names fail listing the known ones."""
    text = name.strip().lower()
    cloud, libtpu = _CLOUD.match(text), _LIBTPU.match(text)
    match = cloud or libtpu
    if not match or match.group(1) not in _ALIASES:
        raise _unknown(name, "not a TPU slice name")
    gen = _ALIASES[match.group(1)]
    if libtpu:
        grid = tuple(int(d) for d in libtpu.group(2).split("x"))
        if len(grid) != gen.grid_dims or 0 in grid:
            raise _unknown(name, f"{gen.name} slices are {gen.grid_dims}-D chip grids")
        return Topology(name, gen, grid)
    size = int(cloud.group(2))
    if size not in gen.cloud_sizes:
        unit = "TensorCores" if gen.names_count_cores else "chips"
        raise _unknown(name, f"{gen.name} comes in {list(gen.cloud_sizes)} {unit}")
    chips = size // 2 if gen.names_count_cores else size
    return Topology(name, gen, chip_grid(chips, gen.grid_dims))


def quiet_libtpu_environment() -> None:
    """libtpu warns about missing TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES on a host without
    TPUs; describing a slice needs neither, so give it harmless values (unless already set).
    Must run before libtpu is loaded (the first jax backend initialisation)."""
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v4-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Only descriptions are needed, no chip: let several planning processes load libtpu (else
    # the second one fails on libtpu's lockfile in /tmp).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def slice_devices(topology: Topology) -> list:
    """The slice's jax devices (not addressable: for ahead-of-time compilation only).

    Raises TopologyUnavailableError when libtpu is not installed or rejects the slice.
    """
    quiet_libtpu_environment()
    from jax.experimental import topologies as jax_topologies  # noqa: PLC0415 - loads libtpu

    try:
        desc = jax_topologies.get_topology_desc(topology_name=topology.libtpu_name,
                                                platform="tpu")
    except Exception as e:  # noqa: BLE001 - libtpu missing, or a slice it does not know
        raise TopologyUnavailableError(f"cannot describe TPU slice {topology.libtpu_name} "
                           f"(--topology={topology.requested!r}): {_first_line(e)}. "
                           "Ahead-of-time TPU plans need libtpu: pip install "
                           "'jax[tpu]' at the pinned jax version.") from e
    return list(desc.devices)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

