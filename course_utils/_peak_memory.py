"""Worker for ``ode.peak_memory_of_solves``: run in a fresh process so its high-water mark of
resident memory belongs to the solves alone. Prints a JSON list of MiB, one per step count."""
from __future__ import annotations

import json
import sys

import torch
from torchdiffeq import odeint, odeint_adjoint

from .nets import TimeMLP
from .ode import ODEFunc


def peak_rss_mib() -> float:
    """This process's high-water mark of resident memory, in MiB.

    On Linux it is read from /proc/self/status (VmHWM), which belongs to this program alone:
    ``getrusage``'s ru_maxrss would also carry the high-water mark of the process that started
    this one (a large Jupyter kernel, say), which the kernel copies across fork and exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2 ** 10  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil
        except ImportError as err:
            raise RuntimeError("measuring peak memory on this system needs the psutil package "
                               "(pip install psutil)") from err
        return psutil.Process().memory_info().peak_wset / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # bytes on macOS


def main(argv):
    method, batch, hidden, seed, *steps = argv
    torch.manual_seed(int(seed))
    torch.set_num_threads(1)  # thread pools allocate per thread; one thread keeps the baseline steady
    f = ODEFunc(TimeMLP(2, int(hidden), 2))
    z = torch.randn(int(batch), 2)
    solve = odeint if method == "backprop" else odeint_adjoint

    def forward_backward(n):
        f.zero_grad()
        solve(f, z, torch.tensor([0.0, 1.0]), method="rk4", options=dict(step_size=1.0 / n))[-1].sum().backward()

    for _ in range(2):
        forward_backward(1)  # warm-up: kernels, allocator pools, autograd's engine
    base = peak_rss_mib()
    out = []
    for n in steps:
        forward_backward(int(n))
        out.append(peak_rss_mib() - base)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
