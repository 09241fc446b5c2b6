"""QUADRAX kernel driver: one ipykernel, driven through jupyter_client, spoken to in JSON lines.

Run inside the workstation's container (see jupyter.ts) as
    python3 -Xfrozen_modules=off -c <this file's text> [max-stream-chars]

stdin, one JSON object a line:
    {"op": "execute", "id": ID, "code": CODE}   run CODE (one at a time: the caller queues)
    {"op": "interrupt"}                          KeyboardInterrupt in the running execution
    {"op": "restart"}                            a fresh kernel: state cleared, count back to 0
    {"op": "shutdown"}                           end the kernel, then exit (end of stdin too)

stdout, one JSON object a line, and nothing else (the kernel's own output goes to stderr):
    {"type": "ready"}                                  kernel started (again, after a restart)
    {"type": "output", "id": ID, "output": OUTPUT}     an nbformat 4 output object, in order
    {"type": "clear_output", "id": ID, "wait": BOOL}   IPython.display.clear_output
    {"type": "reply", "id": ID, "status": "ok"|"error"|"aborted", "execution_count": N}
        after the kernel's execute_reply AND its idle status for the request, so no output
        of the execution comes after it
    {"type": "died", "reason": TEXT}                   the kernel process ended; the driver exits
    {"type": "fatal", "message": TEXT}                 the kernel could not start; the driver exits
    {"type": "error", "message": TEXT}                 a command line we could not understand

One thread: a zmq poller waits on stdin, the kernel's iopub and shell sockets at once, so an
interrupt is read while an execution runs. jupyter_client's KernelManager starts, interrupts
and restarts the kernel; the two sockets are plain (synchronous) zmq sockets it connects, and
its Session signs and reads the messages: its KernelClient is asyncio-based in jupyter_client 7
and its blocking wrappers cost an event-loop run per message. Each output is written as it arrives and not kept
(a long stream text is cut into several stream outputs, which nbformat readers join).
"""
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

START_TIMEOUT = 60.0
LIVENESS_EVERY = 0.25
# An execution idle this long without its execute_reply gets none: ipykernel drops the
# reply when a SIGINT lands in its own handling of the request rather than in the code
# ("KeyboardInterrupt caught in kernel"). It sends the reply before the idle status, so a
# short wait tells the two cases apart.
REPLY_GRACE = 0.5
# A held interrupt sent at execute_input that has not ended its execution after this long is sent again.
RESIGNAL_AFTER = 0.75
MAX_STREAM_CHARS = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
OUT = sys.stdout.buffer


def emit(obj):
    try:
        line = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        # NaN/Infinity (JSON has none) or something not JSON at all: null for them.
        line = json.dumps(_clean(obj), separators=(",", ":"))
    OUT.write(line.encode("ascii") + b"\n")
    # Flushed by the caller once the messages at hand are written (see Driver.run): the lines
    # of one execution usually go out in one write, one frame of the exec's stream.


def _clean(v):
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def nb_output(msg_type, c):
    """An iopub message as an nbformat 4 output object (None: not an output)."""
    if msg_type == "stream":
        return {"output_type": "stream", "name": c.get("name", "stdout"), "text": c.get("text", "")}
    if msg_type == "execute_result":
        return {
            "output_type": "execute_result",
            "execution_count": c.get("execution_count"),
            "data": c.get("data", {}),
            "metadata": c.get("metadata", {}),
        }
    if msg_type == "display_data":
        return {"output_type": "display_data", "data": c.get("data", {}), "metadata": c.get("metadata", {})}
    if msg_type == "error":
        return {
            "output_type": "error",
            "ename": c.get("ename", ""),
            "evalue": c.get("evalue", ""),
            "traceback": c.get("traceback", []),
        }
    return None


class KernelDied(Exception):
    pass


class Execution:
    def __init__(self, eid):
        self.id = eid
        self.started = False  # execute_input seen: the kernel runs it, SIGINT reaches it
        self.interrupt = False  # interrupt asked before it started
        self.reply = None
        self.idle = False
        self.idle_at = 0.0
        self.signalled_at = 0.0  # when the held interrupt was sent (execute_input)
        self.resignals = 0


class Driver:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="quadrax-kernel-")
        # Our own kernelspec: the interpreter that runs this driver (the one probed for
        # ipykernel), with frozen modules off so the debugger does not warn on every start.
        spec_dir = os.path.join(self.dir, "kernels", "quadrax-python3")
        os.makedirs(spec_dir)
        with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
            argv = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            json.dump({"argv": argv, "display_name": "Python 3", "language": "python"}, f)
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        # Figures inline, as in any notebook, even where the image sets a headless default for
        # scripts (MPLBACKEND=Agg): ipykernel only picks the inline backend when none is set.
        if importlib.util.find_spec("matplotlib_inline") is not None:
            os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        self.km = KernelManager(
            kernel_name="quadrax-python3",
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[os.path.join(self.dir, "kernels")]),
            connection_file=os.path.join(self.dir, "connection.json"),
        )
        self.session = self.km.session
        self.iopub = self.shell = None
        self.pending = {}  # msg_id -> Execution
        self.last_liveness = 0.0

    # ---- kernel lifecycle ---------------------------------------------------------------

    def start(self):
        # The kernel's stdout is our stderr: fd 1 is the protocol, and code that writes to it
        # (os.write(1, ...), a C library's printf) must not reach it.
        self.km.start_kernel(stdout=2)
        # Both stay connected across restarts: the new kernel gets the same ports.
        self.iopub = self.km.connect_iopub()
        self.shell = self.km.connect_shell()
        self.poller = zmq.Poller()
        self.poller.register(self.iopub, zmq.POLLIN)
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(0, zmq.POLLIN)
        self.wait_ready()

    def wait_ready(self):
        """A kernel_info request answered on shell AND seen on iopub: the subscription is live
        (a SUB socket misses what is published before it connected), so no output is lost."""
        # Only the kernel's sockets: a command waiting on stdin is read once the kernel is up
        # (polled here, unread, it would make this loop spin).
        kernel_only = zmq.Poller()
        kernel_only.register(self.iopub, zmq.POLLIN)
        kernel_only.register(self.shell, zmq.POLLIN)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive(force=True)
            msg_id = self.session.send(self.shell, "kernel_info_request", {})["header"]["msg_id"]
            replied = seen = False
            attempt_end = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < attempt_end and not (replied and seen):
                for sock, _ in kernel_only.poll(100):
                    if sock is self.shell:
                        for m in self.drain(self.shell):
                            replied |= m["parent_header"].get("msg_id") == msg_id
                    elif sock is self.iopub:
                        for m in self.drain(self.iopub):
                            seen |= m["parent_header"].get("msg_id") == msg_id
            if replied and seen:
                emit({"type": "ready"})
                OUT.flush()
                return
        raise RuntimeError("the kernel did not answer within %d s" % START_TIMEOUT)

    def check_alive(self, force=False):
        now = time.monotonic()
        if not force and now - self.last_liveness < LIVENESS_EVERY:
            return
        self.last_liveness = now
        if not self.km.is_alive():
            raise KernelDied(self.death_reason())

    def death_reason(self):
        code = getattr(getattr(getattr(self.km, "provisioner", None), "process", None), "returncode", None)
        if code is None:
            return "the kernel process ended"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "signal %d" % -code
            hint = " (the container's memory limit, or a kill)" if -code == signal.SIGKILL else ""
            return "the kernel was killed by %s%s" % (name, hint)
        return "the kernel exited with code %d" % code

    def restart(self):
        busy = bool(self.pending)
        for ex in list(self.pending.values()):
            emit({"type": "reply", "id": ex.id, "status": "aborted", "execution_count": None})
        self.pending.clear()
        OUT.flush()
        # A busy kernel is killed (a graceful shutdown would wait for the running code); an
        # idle one is asked to shut down, so its atexit handlers run.
        self.km.restart_kernel(now=busy)
        self.wait_ready()

    def shutdown(self):
        try:
            for sock in (self.iopub, self.shell):
                if sock is not None:
                    sock.close(linger=0)
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=bool(self.pending))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- messages -----------------------------------------------------------------------

    def drain(self, sock):
        while True:
            _, msg = self.session.recv(sock, mode=zmq.NOBLOCK)
            if msg is None:
                return
            yield msg

    def on_iopub(self, m):
        ex = self.pending.get(m["parent_header"].get("msg_id"))
        if ex is None:
            return
        mt = m["msg_type"]
        c = m["content"]
        if mt == "execute_input":
            ex.started = True
            if ex.interrupt:
                ex.interrupt = False
                ex.signalled_at = time.monotonic()
                self.km.interrupt_kernel()
            return
        if mt == "status":
            # Not passed on: the server keeps the kernel's state itself (busy while it runs an
            # execution), and a line per status is a write and a wake-up of the server for nothing.
            state = c.get("execution_state")
            if state == "idle":
                ex.idle = True
                ex.idle_at = time.monotonic()
                self.maybe_done(m["parent_header"]["msg_id"], ex)
            return
        if mt == "clear_output":
            emit({"type": "clear_output", "id": ex.id, "wait": bool(c.get("wait", False))})
            return
        out = nb_output(mt, c)
        if out is None:
            return
        if mt == "stream" and len(out["text"]) > MAX_STREAM_CHARS:
            text = out["text"]
            for i in range(0, len(text), MAX_STREAM_CHARS):
                emit({"type": "output", "id": ex.id, "output": dict(out, text=text[i : i + MAX_STREAM_CHARS])})
            return
        emit({"type": "output", "id": ex.id, "output": out})

    def on_shell(self, m):
        if m["msg_type"] != "execute_reply":
            return
        ex = self.pending.get(m["parent_header"].get("msg_id"))
        if ex is None:
            return
        ex.reply = m["content"]
        self.maybe_done(m["parent_header"]["msg_id"], ex)

    def maybe_done(self, msg_id, ex):
        if ex.reply is None or not ex.idle:
            return
        del self.pending[msg_id]
        status = ex.reply.get("status")
        emit({
            "type": "reply",
            "id": ex.id,
            "status": status if status in ("ok", "error", "aborted") else "error",
            "execution_count": ex.reply.get("execution_count"),
        })

    # ---- commands -----------------------------------------------------------------------

    def command(self, line):
        """Returns False when the driver should stop."""
        try:
            cmd = json.loads(line)
            op = cmd["op"]
        except (ValueError, KeyError, TypeError):
            emit({"type": "error", "message": "not a command: %r" % line[:200]})
            return True
        if op == "execute":
            code = cmd.get("code")
            if not isinstance(code, str):
                emit({"type": "error", "message": "execute needs code as a string"})
                return True
            content = {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            msg_id = self.session.send(self.shell, "execute_request", content)["header"]["msg_id"]
            self.pending[msg_id] = Execution(cmd.get("id"))
        elif op == "interrupt":
            running = [ex for ex in self.pending.values()]
            if any(ex.started for ex in running):
                self.km.interrupt_kernel()
            # Not started yet: the kernel ignores SIGINT between executions, so the signal is
            # sent when its execute_input shows the code is about to run.
            for ex in running:
                if not ex.started:
                    ex.interrupt = True
        elif op == "restart":
            self.restart()
        elif op == "shutdown":
            return False
        else:
            emit({"type": "error", "message": "unknown op %r" % (op,)})
        return True

    def run(self):
        buf = bytearray()
        while True:
            OUT.flush()
            events = dict(self.poller.poll(LIVENESS_EVERY * 1000))
            # Kernel messages before commands: a reply due is written before a restart aborts it.
            if self.iopub in events:
                for m in self.drain(self.iopub):
                    self.on_iopub(m)
            if self.shell in events:
                for m in self.drain(self.shell):
                    self.on_shell(m)
            if 0 in events:
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    return
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line = bytes(buf[:nl]).decode("utf-8", "replace")
                    del buf[: nl + 1]
                    if line.strip() and not self.command(line):
                        return
            self.check_alive()
            self.settle_unanswered()

    def settle_unanswered(self):
        now = time.monotonic()
        for msg_id, ex in list(self.pending.items()):
            # A SIGINT sent as execute_input came can land before the code runs, in ipykernel's
            # own preparation, and be lost: while that execution neither ends nor goes idle, it is
            # sent again (a few times; an execution that then goes idle unanswered ends below).
            if ex.signalled_at and not ex.idle and ex.reply is None and ex.resignals < 5 and now - ex.signalled_at > RESIGNAL_AFTER:
                ex.resignals += 1
                ex.signalled_at = now
                self.km.interrupt_kernel()
            if ex.idle and ex.reply is None and now - ex.idle_at > REPLY_GRACE:
                ex.reply = {"status": "aborted", "execution_count": None}
                self.maybe_done(msg_id, ex)


def main():
    driver = Driver()
    try:
        try:
            driver.start()
        except KernelDied as e:
            emit({"type": "fatal", "message": str(e)})
            return 1
        except Exception as e:  # noqa: BLE001 - any failure to start is reported the same way
            emit({"type": "fatal", "message": "%s: %s" % (type(e).__name__, e)})
            return 1
        try:
            driver.run()
        except KernelDied as e:
            emit({"type": "died", "reason": str(e)})
            return 3
        return 0
    finally:
        OUT.flush()
        driver.shutdown()


if __name__ == "__main__":
    sys.exit(main())
