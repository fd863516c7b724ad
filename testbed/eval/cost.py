"""What an evaluation costs: energy per episode (measured by RAPL, else declared) and money per core-hour.

Energy comes from the machine's RAPL counters where they are readable
(``/sys/class/powercap/intel-rapl:N/energy_uj``, the same interface on Intel and
AMD): an :class:`EnergyMeter` reads them around the evaluation, and the joules are
shared across episodes by CPU seconds. Where no counter is readable (a VM, a
container, or a kernel that keeps ``energy_uj`` root-only), energy is
``cpu_s × CostSettings.cpu_watts_per_core``. Either way the summary names the method.

Typical use by the evaluation::

    with energy_meter() as meter:
        rows = run_episodes(...)
    summary = summarize(rows, cost=CostSettings(), wall_s=..., workers=..., energy=meter.measurement)
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from testbed.errors import ScenarioError

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")  # packages only: their sub-zones (intel-rapl:0:0, core/uncore/dram)
# are parts of the package's figure, so summing them too would count energy twice


@dataclass(frozen=True)
class CostSettings:
    """Prices and power figures used to turn CPU seconds into money and energy.

    The defaults are *declared assumptions*, not measurements; pass your own figures
    to compare set-ups (``--price-per-core-hour`` and friends on ``testbed eval``).

    Attributes:
        price_per_core_hour: price of one busy core (a logical CPU, which is what
            ``cpu_s`` counts) for one hour. Default 0.0425 USD: an on-demand cloud
            vCPU-hour, from AWS EC2 c6i.large (2 vCPU, Linux, us-east-1) at
            0.085 USD per hour, the list price in 2024.
        currency: currency of ``price_per_core_hour`` (default "USD").
        cpu_watts_per_core: power drawn by one busy core, used when RAPL is not
            readable. Default 10 W: a typical server core's share of its package's
            TDP, from an Intel Xeon Platinum 8375C (the CPU in c6i instances:
            300 W TDP over 32 cores ≈ 9.4 W), rounded up. TDP is a sustained-load
            figure for the package alone: it leaves out memory, disks, network and
            the rest of the machine, and the idle power of cores nobody uses.

    Raises:
        ScenarioError: a figure is negative or not finite, or the currency is empty.
    """

    price_per_core_hour: float = 0.0425
    currency: str = "USD"
    cpu_watts_per_core: float = 10.0

    def __post_init__(self) -> None:
        for name in ("price_per_core_hour", "cpu_watts_per_core"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ScenarioError(f"cost.{name}: expected a non-negative number, got {value!r}")
        if not isinstance(self.currency, str) or not self.currency.strip():
            raise ScenarioError(f"cost.currency: expected a currency name such as 'USD', got {self.currency!r}")

    @property
    def declared_method(self) -> str:
        """The method's name when energy is estimated from CPU seconds, e.g. ``declared: 10 W per busy core``."""
        return f"declared: {self.cpu_watts_per_core:g} W per busy core"


@dataclass(frozen=True)
class RaplZone:
    """One RAPL package counter: ``energy_uj`` counts up to ``max_energy_range_uj`` and wraps to 0."""

    name: str  # the zone's own name (``package-0``), or its directory's when it has none
    energy_path: Path
    max_energy_range_uj: int


def rapl_zones(root: Path = POWERCAP_ROOT) -> tuple[list[RaplZone], str]:
    """The readable RAPL package zones under a powercap directory, or why there are none.

    Args:
        root: the powercap class directory (``/sys/class/powercap``; tests pass a fake one).

    Returns:
        ``(zones, reason)``: the zones, sorted by directory name, and an empty reason;
        or no zones and a reason naming what was missing or unreadable. ``psys``
        zones (the whole platform, overlapping the packages) are left out.
    """
    if not root.is_dir():
        return [], f"no {root} (no powercap interface on this machine)"
    candidates = sorted(p for p in root.iterdir() if _PACKAGE_ZONE.fullmatch(p.name))
    if not candidates:
        return [], f"no intel-rapl:N zone under {root}"
    zones: list[RaplZone] = []
    problems: list[str] = []
    for directory in candidates:
        name = _read_text(directory / "name") or directory.name
        if name == "psys":
            continue
        energy_path = directory / "energy_uj"
        try:
            int(energy_path.read_text().strip())
            max_range = int((directory / "max_energy_range_uj").read_text().strip())
        except PermissionError:
            problems.append(f"{energy_path} is not readable (permission denied; the kernel keeps it root-only)")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{directory}: energy_uj/max_energy_range_uj unreadable ({exc})")
            continue
        if max_range <= 0:
            problems.append(f"{directory / 'max_energy_range_uj'}: expected a positive range, got {max_range}")
            continue
        zones.append(RaplZone(name, energy_path, max_range))
    if problems:
        # a partial set would undercount the machine's energy: all package counters, or none
        return [], "; ".join(problems)
    if not zones:
        return [], f"only psys zones under {root}"
    return zones, ""


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class EnergyMeasurement:
    """Energy measured around an evaluation, or why it was not.

    Attributes:
        joules: energy of the RAPL package zones while measured; None when not measured.
        wall_s: wall seconds between start and stop.
        note: how it was measured (zones, sampling), or why RAPL was not used.
        episode_ids: the episodes that ran while it was measured; None means every
            row handed to ``summarize`` (a resumed evaluation passes the ones it ran).
    """

    joules: float | None
    wall_s: float
    note: str
    episode_ids: frozenset[str] | None = None

    @property
    def method(self) -> str:
        """``rapl`` when joules were measured, else ``unavailable``."""
        return "rapl" if self.joules is not None else "unavailable"

    def covering(self, episode_ids: Iterable[str]) -> EnergyMeasurement:
        """The same measurement, said to cover only these episode ids (a resumed run measured only those)."""
        return replace(self, episode_ids=frozenset(str(i) for i in episode_ids))


@dataclass
class EnergyMeter:
    """Reads RAPL package counters from ``start()`` to ``stop()``, summing deltas across wrap-arounds.

    A counter wraps at ``max_energy_range_uj`` (about 262 kJ on many Intel parts:
    15 minutes at 300 W), so a background thread samples every ``poll_s`` seconds
    and each delta is taken modulo the range; a wrap between two samples adds the
    range back. With no readable zones the meter measures nothing and says why.

    Use as a context manager; ``measurement`` holds the result after it exits.
    """

    root: Path = POWERCAP_ROOT
    poll_s: float | None = 30.0  # None: no thread, only start/stop/sample() read the counters
    zones: list[RaplZone] = field(init=False)
    unavailable: str = field(init=False)
    measurement: EnergyMeasurement | None = field(init=False, default=None)
    _last_uj: list[int] = field(init=False, default_factory=list)
    _total_uj: int = field(init=False, default=0)
    _started: float | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    _failed: str = field(init=False, default="")  # why the sampling thread stopped early, if it did

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.zones, self.unavailable = rapl_zones(self.root)

    @property
    def method(self) -> str:
        """``rapl`` when package counters are readable, else ``unavailable``."""
        return "rapl" if self.zones else "unavailable"

    def start(self) -> EnergyMeter:
        """Take the first reading (and start the sampling thread when ``poll_s`` is set)."""
        self._started = time.perf_counter()
        if not self.zones:
            return self
        with self._lock:
            self._last_uj = [self._read(z) for z in self.zones]
            self._total_uj = 0
        self._failed = ""
        if self.poll_s is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="rapl-meter", daemon=True)
            self._thread.start()
        return self

    def sample(self) -> None:
        """Read every counter and add what it counted since the last reading, wrap-around included."""
        if not self.zones:
            return
        with self._lock:
            for index, zone in enumerate(self.zones):
                now = self._read(zone)
                delta = now - self._last_uj[index]
                if delta < 0:  # the counter passed max_energy_range_uj and started again from 0
                    delta += zone.max_energy_range_uj
                self._total_uj += delta
                self._last_uj[index] = now

    def stop(self) -> EnergyMeasurement:
        """Take the last reading and return the measurement (also kept in ``measurement``)."""
        if self._started is None:
            raise RuntimeError("EnergyMeter.stop() before start()")
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        wall_s = time.perf_counter() - self._started
        if not self.zones or self._failed:
            why = self.unavailable or f"sampling stopped mid-run ({self._failed}); a wrap-around may have been missed"
            self.measurement = EnergyMeasurement(None, wall_s, f"RAPL not used: {why}")
            return self.measurement
        self.sample()
        names = ", ".join(z.name for z in self.zones)
        every = f"sampled every {self.poll_s:g} s" if self.poll_s is not None else "read at start and end"
        self.measurement = EnergyMeasurement(
            self._total_uj / 1e6, wall_s,
            f"RAPL package zones ({names}) under {self.root}, {every}; the package's whole energy "
            "(idle power and other processes on the machine included) is shared by the episodes' CPU seconds")
        return self.measurement

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _poll(self) -> None:
        assert self.poll_s is not None
        while not self._stop.wait(self.poll_s):
            try:
                self.sample()
            except (OSError, ValueError) as exc:  # a counter vanished or read garbled mid-run: stop() says so
                self._failed = f"{type(exc).__name__}: {exc}"
                return

    @staticmethod
    def _read(zone: RaplZone) -> int:
        return int(zone.energy_path.read_text().strip())


def energy_meter(root: Path = POWERCAP_ROOT, poll_s: float | None = 30.0) -> EnergyMeter:
    """An energy meter over the machine's RAPL package counters (one that measures nothing, and says why, if none).

    Args:
        root: the powercap class directory; tests pass a fake one.
        poll_s: seconds between background samples (catches counter wrap-around); None: read at start/stop only.
    """
    return EnergyMeter(root=root, poll_s=poll_s)
