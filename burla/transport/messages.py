"""Every message that crosses a burla socket, defined once.

Messages are ``msgspec.Struct(tag=True, array_like=True)`` classes forming one
tagged union, ``Message``.  They are encoded as MessagePack arrays whose first
element is the tag, so a peer decodes them with one typed decoder and
dispatches with ``match``.  A frame that does not decode into exactly one of
these types (unknown tag, wrong field type, missing field) is a protocol
error and closes the connection.

User data never appears as a field of its own: inputs, results and the
function travel as opaque ``bytes`` (pickles made by the client or a worker),
so the head and the node daemons forward them without unpickling.

Who sends what (``C`` client, ``H`` head, ``N`` node daemon, ``W`` worker):

====================  =========  ==========================================
message               direction  meaning
====================  =========  ==========================================
ClientHello           C→H        first message of a client connection
NodeHello             N→H        a node registers its resources
WorkerHello           W→N        a worker process is ready
Welcome               H→C/N      registration accepted
Heartbeat             any        "I am alive" when nothing else was sent
SubmitJob             C→H        a new job (function + first inputs)
JobAccepted           H→C        job admitted, with its current parallelism
InputCredit           H→C        the client may send N more input batches
InputBatch            C→H→N→W    a run of consecutive inputs
InputsDone            C→H        no input after ``total``
InputsStored          H→C        a durable head holds the inputs before ``upto``
ResumeJob             C→H        go on with a job after the head restarted
JobResumed            H→C        the head resumed it: resend inputs from ``received``
JobEndedAck           C→H        the client holds the job's end and every result before it
AttachJob             C→H        read a detached job's results (again, after a head restart)
JobAttached           H→C        attached (or no such job); its results follow
QueryJob              C→H        how is this job doing?
JobInfo               H→C        the answer
ResultBatch           W→N→H→C    results of one input batch
ResultAck             C→H        the client consumed N result batches
LogBatch              W→N→H→C    lines printed by the function
LogAck                C→H→N→W    the client printed N log batches (log credit)
CancelJob             C→H        stop the job
JobEnded              H→C        the job is over (done, failed or canceled)
JobNotice             H→C        one line the user should see (a node was lost...)
AssignJob             H→N        the node now serves this job
StartJob              N→W        load the function of this job
JobSetupFailed        W→N→H      the function could not be loaded
BatchLost             N→H        a batch will not come back (worker died)
BatchAssigned         N→H        which worker runs a batch (for the dashboard)
Installing            N→H        the node is installing a job's environment / is done
NodeStats             N→H        CPU/RAM sample of the node, every second
RestartNode           H→N        replace every worker process now
ReleaseJob            H→N        the job is over on this node
EndJob                N→W        forget the job, reset
====================  =========  ==========================================
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

PROTOCOL_VERSION = 2
# Input batches a client may send with SubmitJob, before its first InputCredit
# (saves a round trip): part of the protocol, so client and head agree on it.
INITIAL_INPUT_CREDIT = 4
ALL_INPUTS = (1 << 63) - 1  # JobResumed.received of a job that ended: the head needs no input again


class _Msg(msgspec.Struct, tag=True, array_like=True, omit_defaults=False):
    pass


# --- connection set-up -------------------------------------------------------


class ClientHello(_Msg):
    version: int = PROTOCOL_VERSION


class NodeHello(_Msg):
    node_id: str
    host: str
    cpus: int
    ram_bytes: int
    n_workers: int
    version: int = PROTOCOL_VERSION
    provider: str = "local"
    runtime: str = "process"  # "process" | "container" (can honour image=)
    gpus: int = 0
    environments: bool = False  # installs a job's missing distributions before its first call (containers)
    # ... only from wheels the client ships (cluster.yaml packages: client); then what its workers have.
    wheels_only: bool = False
    image_distributions: dict[str, str] = {}


class WorkerHello(_Msg):
    worker_id: int
    pid: int
    version: int = PROTOCOL_VERSION


class Welcome(_Msg):
    cluster: str
    workers: int = 0  # workers registered in the cluster right now
    # Some node installs a job's requirements (SubmitJob.requirements): clients send them only then.
    environments: bool = False
    # Those nodes take only wheels from the client, whose workers have these {name: version}.
    wheels_only: bool = False
    image_distributions: dict[str, str] = {}
    # The head keeps its jobs in a durable queue backend: a client whose connection drops
    # reconnects and resumes its jobs (ResumeJob) instead of failing them.
    durable: bool = False


class Heartbeat(_Msg):
    pass


# --- jobs ---------------------------------------------------------------------


class Dist(_Msg):
    """A distribution of the client's environment that the workers should have (issue 12, item 4)."""

    name: str  # canonical (PEP 503)
    version: str
    local: bool = False  # a local project: installed from the wheel of that name in ``wheels``


class SubmitJob(_Msg):
    job_id: str
    function_name: str
    function: bytes
    func_cpu: int
    func_ram: int  # bytes; 0 means "not set"
    max_parallelism: int  # 0 means "no cap"
    max_retries: int
    func_timeout: float  # seconds; 0 means "no timeout"
    raise_errors: bool
    image: str = ""  # container image for the workers; "" = the node's default
    func_gpu: int = 0
    parent: str = ""  # the job whose call submitted this one (a nested call), else ""
    # The client's environment, for nodes whose workers run in containers: what the image lacks
    # is installed before the job's first call there.  Local projects come as wheels {filename: bytes}.
    requirements: list[Dist] = []
    wheels: dict[str, bytes] = {}
    # Runs on without its client once every input is stored; results wait at the head for a
    # client that attaches (AttachJob), up to HeadConfig's retention.
    detach: bool = False


class JobAccepted(_Msg):
    job_id: str
    n_workers: int
    input_credit: int


class JobError(_Msg):
    """Why a job failed; ``kind`` names the client exception to raise."""

    kind: str
    message: str
    input_index: int = -1


class JobEnded(_Msg):
    job_id: str
    status: str  # "done" | "failed" | "canceled"
    error: JobError | None = None


class JobEndedAck(_Msg):
    """Sent to a durable head on JobEnded: it may forget the job (results come before the
    end, so the client holds them all).  Until then a restarted head could send them again."""

    job_id: str


class JobNotice(_Msg):
    job_id: str
    text: str


class CancelJob(_Msg):
    job_id: str
    reason: str


class InputCredit(_Msg):
    job_id: str
    batches: int


class InputBatch(_Msg):
    """Inputs ``start .. start+len(ends)-1``.

    ``payload`` is the concatenation of one pickle per input; ``ends[i]`` is
    where input ``start+i``'s pickle ends, so a batch can be split by slicing
    without unpickling it.
    """

    job_id: str
    start: int
    ends: list[int]
    attempt: int
    payload: bytes  # last: see encode_parts (may be a _payload.Segments when sent)


class InputsDone(_Msg):
    job_id: str
    total: int


class InputsStored(_Msg):
    """A durable head holds the job's inputs before ``upto``: the client may forget them
    (it keeps every batch it sent until then, to send again after a head restart).
    ``complete``: and it holds the total (the answer to InputsDone of a detached job)."""

    job_id: str
    upto: int
    complete: bool = False


class AttachJob(_Msg):
    """Read a detached job's results.  The client holds its first ``held`` result batches
    (0 the first time; after a head restart, what it had received)."""

    job_id: str
    held: int = 0


class JobAttached(_Msg):
    """The answer to AttachJob: the stored results from ``first`` on follow, then the live ones
    (and JobEnded once it ended).  ``found`` False: the head has no such detached job."""

    job_id: str
    found: bool
    first: int = 0


class QueryJob(_Msg):
    job_id: str


class JobInfo(_Msg):
    """``state``: running, waiting (restored, for its client), done, failed, canceled,
    expired (its results passed their retention) or unknown."""

    job_id: str
    state: str
    total: int = -1  # -1: not all inputs sent yet
    done: int = 0  # inputs with a result
    waiting: int = 0  # results (inputs) not taken by a client yet
    detached: bool = False
    error: JobError | None = None


class ResumeJob(_Msg):
    """After reconnecting to a restarted head: go on with this job.  The client holds
    (and never wants again) its first ``results_held`` result batches."""

    job_id: str
    results_held: int


class JobResumed(_Msg):
    """The head's answer to ResumeJob: it holds the inputs before ``received`` (the
    client sends the rest again, then InputsDone), and grants ``input_credit`` batches.
    ``received`` is -1 when the head does not know the job: it was never stored (the
    client submits it again) or it was given up."""

    job_id: str
    received: int
    input_credit: int


class ItemError(_Msg):
    index: int
    type_name: str
    traceback: str
    exception: bytes  # pickled exception (tblib), or b"" if it could not be pickled
    timeout: bool = False


class ResultBatch(_Msg):
    """Results of one ``InputBatch``; ``payload``/``ends`` as in InputBatch.

    An input whose call raised has ``None`` in the payload and an entry in
    ``errors``.
    """

    job_id: str
    start: int
    ends: list[int]
    errors: list[ItemError]
    durations: list[float]  # seconds per input
    payload: bytes  # last: see encode_parts


class ResultAck(_Msg):
    job_id: str
    batches: int


class LogLine(_Msg):
    index: int
    stream: int  # 1 stdout, 2 stderr
    text: str


class LogBatch(_Msg):
    job_id: str
    lines: list[LogLine]


class LogAck(_Msg):
    """Log batches consumed: a worker may have at most ``runtime._worker.LOG_WINDOW`` of its
    batches not yet acknowledged by the client, so print output is bounded
    at every hop (past the window, ``print`` blocks in the worker)."""

    job_id: str
    batches: int


# --- head <-> node <-> worker ---------------------------------------------------


class AssignJob(_Msg):
    job_id: str
    function: bytes
    n_workers: int
    func_timeout: float
    func_ram: int
    func_cpu: int = 1
    func_gpu: int = 0
    image: str = ""
    prefetch: int = 2  # batches the node may hold per worker: one running, the rest ready
    # A job of the same job tree as the node's current one (a nested call): served beside it
    # on workers of its own, which the node starts when its pool has none idle.
    guest: bool = False
    requirements: list[Dist] = []  # SubmitJob's
    wheels: dict[str, bytes] = {}


class StartJob(_Msg):
    job_id: str
    function: bytes
    func_timeout: float
    paths: list[str] = []  # directories the worker puts first on sys.path for the job (its environment)


class JobSetupFailed(_Msg):
    job_id: str
    message: str
    kind: str = "FunctionLoadError"  # the client exception (burla._errors.JOB_ERROR_KINDS), else JobFailed


class BatchLost(_Msg):
    job_id: str
    start: int
    crashed_index: int  # the input that was running when the worker died, or -1
    reason: str


class BatchAssigned(_Msg):
    job_id: str
    start: int
    worker_id: int


class Installing(_Msg):
    """The node started installing ``what`` (e.g. "pandas 2.2.3, pytz 2024.1") for the job's
    workers; ``done``: it is in place.  (A job whose environment is in place sends neither.)"""

    job_id: str
    what: str
    done: bool = False


class NodeStats(_Msg):
    cpu_percent: float
    ram_used: int
    ram_total: int


class RestartNode(_Msg):
    pass


class ReleaseJob(_Msg):
    job_id: str


class EndJob(_Msg):
    job_id: str


class InputBatchView(_Msg, tag="InputBatch", dict=True):
    """An InputBatch as every receiver sees it: ``payload`` stays an
    undecoded view into the received frame (unpickled in place by the
    worker), and ``raw`` is that frame, so a head or node forwards it with no
    decoding, no encoding and no copy."""

    job_id: str
    start: int
    ends: list[int]
    attempt: int
    payload: msgspec.Raw


class ResultBatchView(_Msg, tag="ResultBatch", dict=True):
    """A ResultBatch being forwarded (see InputBatchView)."""

    job_id: str
    start: int
    ends: list[int]
    errors: list[ItemError]
    durations: list[float]
    payload: msgspec.Raw


# Every message, as senders build them.
Message: TypeAlias = (
    ClientHello | NodeHello | WorkerHello | Welcome | Heartbeat | SubmitJob | JobAccepted | JobEnded | JobNotice
    | CancelJob | InputCredit | InputBatch | InputsDone | ResultBatch | ResultAck | LogBatch | LogAck | AssignJob
    | StartJob | JobSetupFailed | BatchLost | BatchAssigned | Installing | NodeStats | RestartNode | ReleaseJob
    | EndJob
    | InputsStored | ResumeJob | JobResumed | JobEndedAck
    | AttachJob | JobAttached | QueryJob | JobInfo
)

# What receivers get: batches stay undecoded views (InputBatchView, ResultBatchView).
DecodedMessage: TypeAlias = (
    ClientHello | NodeHello | WorkerHello | Welcome | Heartbeat | SubmitJob | JobAccepted | JobEnded | JobNotice
    | CancelJob | InputCredit | InputBatchView | InputsDone | ResultBatchView | ResultAck | LogBatch | LogAck
    | AssignJob | StartJob | JobSetupFailed | BatchLost | BatchAssigned | Installing | NodeStats | RestartNode
    | ReleaseJob | EndJob
    | InputsStored | ResumeJob | JobResumed | JobEndedAck
    | AttachJob | JobAttached | QueryJob | JobInfo
)

# What senders may pass: a message, or a received batch forwarded as it came.
Outgoing: TypeAlias = Message | InputBatchView | ResultBatchView
AnyInputBatch: TypeAlias = InputBatch | InputBatchView
AnyResultBatch: TypeAlias = ResultBatch | ResultBatchView

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DecodedMessage)
_EMPTY_BIN = b"\xc4\x00"


def encode(msg: Outgoing) -> bytes | bytearray:
    """One message as one buffer (see encode_parts for the copy-free way)."""
    parts = encode_parts(msg)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[return-value]  # one part is the whole message


def encode_parts(msg: Outgoing) -> list[bytes | bytearray | memoryview]:
    """The encoding of ``msg`` as buffers to write one after the other.

    A view that was received is its own frame (``raw``).  A batch built here
    is encoded with an empty payload, whose two bytes (``bin8`` of length 0)
    are then replaced by the payload's real ``bin`` header followed by the
    payload object itself: its bytes are never copied in user space.
    """
    raw = raw_frame(msg)
    if raw is not None:
        return [raw]
    if isinstance(msg, (InputBatch, ResultBatch)) and len(msg.payload) > 4096:
        head = _encoder.encode(msgspec.structs.replace(msg, payload=b""))
        assert head.endswith(_EMPTY_BIN)
        payload = msg.payload
        parts = payload.parts if hasattr(payload, "parts") else [payload]  # _payload.Segments
        return [head[:-2], _bin_header(len(payload)), *parts]
    if isinstance(msg, (InputBatch, ResultBatch)) and hasattr(msg.payload, "parts"):
        msg = msgspec.structs.replace(msg, payload=bytes(msg.payload))
    return [_encoder.encode(msg)]


def _bin_header(n: int) -> bytes:
    if n < 256:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 65536:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def decode(data: bytes | bytearray | memoryview) -> DecodedMessage:
    """Decode one message; raises ``msgspec.DecodeError`` (incl. ValidationError).

    Batches come back as views (InputBatchView, ResultBatchView) that keep
    ``data`` as ``raw``: re-sending one re-sends ``data`` unchanged.
    """
    msg = _decoder.decode(data)
    if isinstance(msg, (InputBatchView, ResultBatchView)):
        setattr(msg, "raw", data)  # noqa: B010 (an attribute outside the struct's fields: see raw_frame)
    return msg


def raw_frame(msg: object) -> bytes | bytearray | memoryview | None:
    """The received frame a view was decoded from (re-sent as is), or None."""
    raw: bytes | bytearray | memoryview | None = getattr(msg, "raw", None)
    return raw


def payload_view(payload: bytes | msgspec.Raw) -> memoryview:
    """A batch payload as a zero-copy memoryview, decoded or still a view."""
    if isinstance(payload, msgspec.Raw):
        view = memoryview(payload)
        marker = view[0]
        skip = 2 if marker == 0xC4 else 3 if marker == 0xC5 else 5 if marker == 0xC6 else -1
        if skip < 0:
            raise msgspec.DecodeError("batch payload is not a MessagePack bin")
        return view[skip:]
    return memoryview(payload)


def payload_bytes(payload: bytes | msgspec.Raw) -> bytes:
    return payload if isinstance(payload, bytes) else bytes(payload_view(payload))
