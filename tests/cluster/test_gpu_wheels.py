"""The GPU machine's wheel lists (requirements/gpu-sample.txt and gpu-serve.txt, downloaded by
scripts/make_serve_bundle.sh): every package they carry finds what it requires there (Python 3.12,
Linux x86_64) in the lists themselves or among what the machine has, at versions the pins satisfy;
the serve list is exactly the serve extra's closure at the versions this machine's tests run.
Requirements are read from this environment's installed metadata of each package."""
import importlib.metadata as md
import pathlib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
# What the GPU machine has (seen there 2026-12-01): torch (with what it requires) and these.
MACHINE = {"torch", "numpy", "pandas", "pyarrow", "opencv-python-headless", "transformers", "safetensors",
           "huggingface-hub", "scikit-learn", "onnxruntime"}
GPU_PYTHON = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.0",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
              "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{name}: {line} is not pinned"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _required_on_gpu(package: str) -> list[Requirement]:
    """What `package` (as installed here) requires on the GPU machine: no extras, its markers."""
    requirements = [Requirement(text) for text in md.requires(package) or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(GPU_PYTHON)]


def test_carried_packages_find_what_they_require():
    carried = {**_pins("gpu-sample.txt"), **_pins("gpu-serve.txt")}
    assert len(carried) == len(_pins("gpu-sample.txt")) + len(_pins("gpu-serve.txt")), "a package in both lists"
    for package in carried:
        for requirement in _required_on_gpu(package):
            name = canonicalize_name(requirement.name)
            if name in MACHINE:
                continue
            assert name in carried, f"{package} requires {requirement}: neither carried nor on the GPU machine"
            assert requirement.specifier.contains(carried[name], prereleases=True), \
                f"{package} requires {requirement}; the list pins {name}=={carried[name]}"


def test_serve_list_is_the_serve_extras_closure_as_tested_here():
    extra = {**GPU_PYTHON, "extra": "serve"}
    roots = [Requirement(text) for text in md.requires("megatron-video") or []]
    pending = [canonicalize_name(r.name) for r in roots if r.marker is not None and r.marker.evaluate(extra)]
    assert pending, "no serve extra in megatron-video's metadata"
    closure: set[str] = set()
    while pending:
        name = pending.pop()
        if name in closure or name in MACHINE:
            continue
        closure.add(name)
        pending += [canonicalize_name(r.name) for r in _required_on_gpu(name)]
    pins = _pins("gpu-serve.txt")
    assert set(pins) == closure
    assert {name: md.version(name) for name in pins} == pins
