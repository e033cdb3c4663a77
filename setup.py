"""Build the Cython extensions in ext/ as mediaserver._<name>.

Every ext/*.pyx becomes the module mediaserver.<stem>; they are required (no
pure-Python fallback), so a missing compiler or missing OpenSSL headers stop the
build with one clear message instead of a wall of compiler output.

Cross-module declarations live in ext/mediaserver.<stem>.pxd: Cython looks a
module's .pxd up by its dotted name, so this keeps the .pyx and .pxd side by side
in ext/ while the modules live in the mediaserver package.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup

OPENSSL_PROBE = "#include <openssl/evp.h>\nint main(void){return EVP_aes_128_gcm()==0;}\n"


def _fail(message: str) -> None:
    sys.stderr.write(f"\nerror: {message}\n\n")
    raise SystemExit(1)


def _check_toolchain() -> None:
    cc = os.environ.get("CC", "cc").split()[0]
    if shutil.which(cc) is None:
        _fail(f"no C compiler ('{cc}'): install gcc (Debian: apt-get install build-essential)")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENSSL_PROBE)
        proc = subprocess.run(
            [cc, src, "-o", os.path.join(tmp, "probe"), "-lcrypto"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            _fail(
                "OpenSSL headers or libcrypto not found (needed by ext/_srtp.pyx): "
                "install libssl-dev (Debian) or openssl-devel (Fedora)\n"
                + proc.stderr.strip()
            )


def _extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        _fail("Cython is missing: pip install 'Cython~=3.1' (pip install -e . brings it)")
    debug = os.environ.get("MEDIASERVER_DEBUG") == "1"
    cflags = ["-O0", "-g", "-DDEBUG=1"] if debug else ["-O3", "-DDEBUG=0"]
    cflags += ["-Wno-unused-function", "-Wno-unreachable-code"]
    # make fuzz: MEDIASERVER_SANITIZE=address,fuzzer-no-link (with CC=clang) builds
    # AddressSanitizer + libFuzzer coverage instrumentation for atheris (tests/fuzz/README.md)
    sanitize = os.environ.get("MEDIASERVER_SANITIZE")
    ldflags = [f"-fsanitize={sanitize}"] if sanitize else []
    if sanitize:
        cflags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
    exts = []
    only = os.environ.get("MEDIASERVER_EXT")  # e.g. "_srtp": rebuild one module while developing
    for path in sorted(glob.glob("ext/*.pyx")):
        stem = os.path.splitext(os.path.basename(path))[0]
        if only and stem not in only.split(","):
            continue
        exts.append(
            Extension(
                f"mediaserver.{stem}",
                [path],
                libraries=["crypto"],
                extra_compile_args=cflags,
                extra_link_args=ldflags,
            )
        )
    return cythonize(
        exts,
        include_path=["ext"],
        annotate=os.environ.get("MEDIASERVER_ANNOTATE") == "1",
        compiler_directives={"language_level": 3, "embedsignature": True},
    )


if any(cmd in sys.argv for cmd in ("build_ext", "build", "develop", "install", "bdist_wheel", "editable_wheel")):
    _check_toolchain()
    ext_modules = _extensions()
else:
    ext_modules = _extensions() if glob.glob("ext/*.pyx") else []

setup(ext_modules=ext_modules)
