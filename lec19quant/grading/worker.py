"""The student's process: runs a submitted notebook's cells and answers the checks' cases.

Started by lec19quant.grading.sandbox as `python -I -m lec19quant.grading.worker IN OUT MEMORY
THREADS` with two pipe descriptors. It limits its own memory, blocks the network from inside too
(an audit hook, which Python code cannot remove), then obeys the grader's requests:
{"exec": source} runs a cell in the notebook's namespace; {"answer": call} runs a check call in
record mode and sends back the student's answers. Nothing it sends decides a score: the grader
compares the answers with its own expected values.
"""
import builtins
import re
import resource
import sys

_BLOCKED = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
            "socket.gethostbyname", "socket.gethostbyaddr")


def _no_network(event: str, args) -> None:
    if event in _BLOCKED:
        raise PermissionError(f"no network while grading ({event})")


def _without_magics(cell: str) -> str:
    """The cell with IPython's %magic and !shell lines replaced by `pass` (they do not run here)."""
    return re.sub(r"(?m)^(\s*)(?:%|!(?!=)).*$", r"\1pass", cell)


def main(fd_in: int, fd_out: int, memory_bytes: int, threads: int) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    sys.addaudithook(_no_network)
    import torch

    from .. import assignments
    from ..checks import core
    from . import wire

    record, Exercise = core.record, assignments.Exercise  # as they are before any student code runs
    torch.set_num_threads(threads)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    wire.send(fd_out, {"ready": True})
    while True:
        try:
            request = wire.receive(fd_in)
        except wire.WireError:
            return  # the grader is gone
        try:
            if "exec" in request:
                exec(compile(_without_magics(request["exec"]), "<cell>", "exec"), namespace)
                reply = {"ok": True}
            else:
                exercise = Exercise(request["answer"], 1)
                if exercise.answer not in namespace:
                    raise NameError(f"{exercise.answer} is not defined")
                with record() as recorded:
                    exercise.run(namespace[exercise.answer])
                reply = {"answers": [[_sendable(answer) for answer in run] for run in recorded]}
        except BaseException as error:  # noqa: BLE001 - the student's code may raise anything
            reply = {"error": f"{type(error).__name__}: {error}"}
        wire.send(fd_out, reply)


def _sendable(answer: tuple[bool, object]) -> tuple[bool, object]:
    """The (called, got) answer itself, or (False, why) when `got` cannot be sent."""
    from . import wire

    try:
        wire.encode(answer[1])
        return answer
    except (TypeError, ValueError, RecursionError) as error:
        return False, f"returned something the grader cannot read ({error})"


if __name__ == "__main__":
    main(*map(int, sys.argv[1:5]))
