"""Where a model comes from: a file, or an MLflow URI resolved to a local ONNX file first.

A model is given as a path or as an MLflow URI:

- ``models:/<name>/<version>``: a registered model version;
- ``models:/<name>@<alias>``: the version an alias points to, looked up once and then pinned
  (the files gated are those of the version recorded, even if the alias moves meanwhile);
- ``models:/<model id>``: an MLflow 3 logged model (``m-…``);
- ``runs:/<run id>/<artifact path>``: a model folder (or a plain ``.onnx`` file) a run logged.

``models:/<name>/latest`` and stage names are refused: they move under a running gate, and a
release gate names what it judges (use a version, or an alias, which is resolved and
recorded).

A URI is resolved through the tracking server the run is logged to (the policy's
``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default store; the
registry is ``MLFLOW_REGISTRY_URI`` when set), also with ``--no-mlflow``, which only stops
fairgate from *writing* to MLflow. Before the pass: the version's (or logged model's, or
run's) metadata is read; the whole model folder, external data included, is downloaded into
a temporary folder that lives as long as the :class:`ModelFiles` that made it (one gate, or
one comparison); the folder is proved to hold one ONNX model (the ``onnx`` flavor of its
MLmodel, else exactly one ``.onnx`` file), regular files only, with external data inside
the model's folder; every file is hashed. Anything else is refused with exit 3, naming the
URI and what was found. What was resolved is the model's ``source`` in report.json and in
the MLflow run.

mlflow is imported only when a URI is resolved.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from fairgate.errors import ModelError, UsageError
from fairgate.inputs.files import read_regular_file

if TYPE_CHECKING:
    from fairgate.policy import LoadedPolicy

Kind = Literal["file", "version", "alias", "logged_model", "run"]
FORMS = "an .onnx file, models:/NAME/VERSION, models:/NAME@ALIAS, models:/MODEL_ID or runs:/RUN_ID/PATH"
_OTHER_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")  # s3://, dbfs:/ ... (not C:\ or C:/)
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_FILES = 10_000  # files in one downloaded model folder
MLMODEL_LIMIT = 1 << 20


@dataclass(frozen=True)
class ModelSource:
    """A model as the user gave it: a file path, or a parsed MLflow URI (nothing fetched)."""

    given: str
    kind: Kind
    path: Path | None = None  # kind "file"
    name: str | None = None  # registered model name
    version: str | None = None
    alias: str | None = None
    model_id: str | None = None  # MLflow 3 logged model
    run_id: str | None = None
    artifact_path: str | None = None

    @property
    def is_uri(self) -> bool:
        return self.kind != "file"

    @property
    def registered(self) -> bool:
        """A registered model version (by number or alias): what can be stamped and promoted."""
        return self.kind in ("version", "alias")


def model_source(value: str | os.PathLike[str] | ModelSource, option: str = "model") -> ModelSource:
    """Parse what the user gave: a ``Path`` is always a file; text is a URI when it starts
    with ``models:`` or ``runs:``. Malformed URIs are a UsageError (exit 2) naming ``option``."""
    if isinstance(value, ModelSource):
        return value
    if isinstance(value, os.PathLike):
        return ModelSource(os.fspath(value), "file", path=Path(value))
    text = str(value)

    def bad(why: str) -> UsageError:
        return UsageError(f"{option} {text!r}: {why}")

    if text.startswith(("models:", "runs:")) and _CONTROL.search(text):
        raise bad("contains a control character")
    if text.startswith("models:"):
        return _models_uri(text, bad)
    if text.startswith("runs:"):
        if not text.startswith("runs:/") or text.startswith("runs://"):
            raise bad("expected runs:/RUN_ID/PATH")
        run_id, _, path = text[len("runs:/"):].partition("/")
        if not _RUN_ID.match(run_id):
            raise bad(f"{run_id!r} is not an MLflow run id; expected runs:/RUN_ID/PATH")
        parts = PurePosixPath(path).parts
        if not path.strip("/") or any(p in ("..", ".") for p in parts):
            raise bad("name the model's artifact path in the run (runs:/RUN_ID/model); the "
                      "whole run's artifacts are not one model")
        return ModelSource(text, "run", run_id=run_id, artifact_path=path.strip("/"))
    m = _OTHER_URI.match(text)
    if m:
        raise bad(f"{m.group(1)}: URIs are not read by fairgate; give {FORMS}")
    return ModelSource(text, "file", path=Path(text))


def _models_uri(text: str, bad: Any) -> ModelSource:
    if not text.startswith("models:/") or text.startswith("models://"):
        raise bad(f"expected {FORMS.split(', ', 1)[1]}")
    rest = text[len("models:/"):]
    parts = rest.split("/")
    if not rest or len(parts) > 2 or not parts[0].strip():
        raise bad("expected models:/NAME/VERSION, models:/NAME@ALIAS or models:/MODEL_ID")
    if len(parts) == 2:
        name, suffix = parts
        if suffix.isdigit():
            return ModelSource(text, "version", name=name, version=str(int(suffix)))
        if not suffix.strip():
            raise bad("no version after the model name")
        raise bad(f"{suffix!r} is a stage or 'latest', which can move while the gate runs; "
                  f"name a version (models:/{name}/7) or an alias (models:/{name}@champion)")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if not name.strip() or not alias.strip():
            raise bad("expected models:/NAME@ALIAS")
        return ModelSource(text, "alias", name=name, alias=alias)
    return ModelSource(text, "logged_model", model_id=rest)


def source_label(source: ModelSource, version: str | None = None) -> str:
    """Short name for run names and reports: file name, ``credit/7``, ``credit@champion
    (v7)``, ``m-1b7f3fd6…``, ``run 48c10900…/model``."""
    if source.kind == "file":
        return Path(source.given).name
    if source.kind == "version":
        return f"{source.name}/{source.version}"
    if source.kind == "alias":
        return f"{source.name}@{source.alias}" + (f" (v{version})" if version else "")
    if source.kind == "logged_model":
        mid = source.model_id or ""
        return mid if len(mid) <= 12 else f"{mid[:10]}…"
    return f"run {(source.run_id or '')[:8]}…/{source.artifact_path}"


def model_label(info: Mapping[str, Any]) -> str:
    """A model of a report's ``inputs`` as a person names it: the registry name and version,
    the file name, or the score column. Raw text: each sink makes it safe."""
    source = info.get("source")
    if isinstance(source, Mapping) and source.get("label"):
        return str(source["label"])
    if info.get("path"):
        return Path(str(info["path"])).name
    return f"column {info.get('column')}"


# ----------------------------------------------------------------------------- resolved


@dataclass(frozen=True)
class LocalModel:
    """A model as a local ONNX file, and where it came from (None for a file)."""

    path: Path
    source: ModelSource
    provenance: dict[str, Any] | None = None
    in_memory: bool = False  # given as bytes (the Python API), held in a private file

    def describe(self) -> dict[str, Any]:
        """What report.json's ``inputs.<model>`` adds to the predictor's own description."""
        if self.in_memory:
            return {"path": self.source.given, "given_as": "bytes",
                    "sha256": sha256_file(self.path)}
        if self.provenance is None:
            return {"sha256": sha256_file(self.path)}
        files = {f["path"]: f["sha256"] for f in self.provenance["files"]}
        return {"path": self.source.given, "sha256": files[self.provenance["model_file"]],
                "source": self.provenance}


def sha256_file(path: Path) -> str:
    from fairgate.errors import InputError
    from fairgate.inputs.files import require_regular_file

    require_regular_file(path, InputError)  # a FIFO or a device would never end
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelFiles:
    """Resolves model sources to local ONNX files; downloads live until :meth:`close`.

    One per gate, or one per comparison so that the teacher is downloaded once. Resolved
    URIs are cached by their text.
    """

    def __init__(self, policy: LoadedPolicy | None = None, *, tracking_uri: str | None = None,
                 timeout: float | None = None) -> None:
        self._policy = policy
        self._tracking_uri = tracking_uri
        self._timeout = timeout
        self._resolved: dict[str, LocalModel] = {}
        self._folders: list[Path] = []

    def __enter__(self) -> ModelFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every downloaded model folder."""
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()
        self._resolved.clear()

    def from_bytes(self, data: bytes, role: str) -> LocalModel:
        """A model given as the bytes of an ONNX file (the Python API): written to a private
        folder removed by :meth:`close`, since its graph is read and its session made from a
        file like any other model's; report.json records its sha256."""
        folder = Path(tempfile.mkdtemp(prefix="fairgate-model-"))
        self._folders.append(folder)
        path = folder / f"{role.replace(' ', '_')}.onnx"
        path.write_bytes(data)
        return LocalModel(path, ModelSource(f"in-memory {role} model ({len(data):,} bytes)", "file",
                                            path=path), in_memory=True)

    def local(self, source: ModelSource, role: str) -> LocalModel:
        if not source.is_uri:
            assert source.path is not None
            return LocalModel(source.path, source)
        if source.given not in self._resolved:
            self._resolved[source.given] = self._resolve(source, role)
        return self._resolved[source.given]

    # ------------------------------------------------------------------ MLflow

    def _target(self) -> tuple[str | None, str, float]:
        """(tracking URI or None for MLflow's default store, as shown in messages, timeout)."""
        from fairgate.integrations.mlflow import redact, target_of

        timeout = self._timeout
        if self._policy is not None:
            target = target_of(self._policy)  # a malformed URI is a UsageError (exit 2)
            uri, shown = target.uri, target.shown
            timeout = timeout or self._policy.policy.mlflow.timeout
        else:
            uri = self._tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None
            shown = redact(uri) if uri else "MLflow's default store (./mlflow.db)"
        return uri, shown, timeout or 15.0

    def _resolve(self, source: ModelSource, role: str) -> LocalModel:
        uri, shown, timeout = self._target()
        where = f"{role} model {source.given}"
        if uri is None and not (Path("mlflow.db").is_file() or Path("mlruns").is_dir()):
            raise ModelError(f"{where}: no MLflow tracking server is set (MLFLOW_TRACKING_URI, "
                             "or mlflow.tracking_uri in the policy) and MLflow's default store "
                             "./mlflow.db does not exist here")
        folder = Path(tempfile.mkdtemp(prefix="fairgate-model-"))
        self._folders.append(folder)
        with _http(timeout):
            info, got = _fetch(source, uri, folder, where, shown)
        model_file, flavors = _model_file(got, where)
        root = got if got.is_dir() else got.parent
        files = _hashed_files(root, where)
        _check_graph(model_file, where)
        info.update({
            "uri": source.given,
            "label": source_label(source, info.get("version")),
            "tracking_uri": shown,
            "flavors": flavors,
            "model_file": model_file.relative_to(root).as_posix(),
            "files": files,
        })
        return LocalModel(model_file, source, info)


@contextlib.contextmanager
def _http(timeout: float) -> Iterator[None]:
    """mlflow's HTTP client bounded while fairgate reads from it (one retry, no Retry-After),
    and its download progress bar off: fairgate's stderr carries its own messages only."""
    from fairgate.integrations.mlflow_worker import http_settings

    settings = http_settings(timeout, os.environ, per_request=timeout)  # progress bar off too
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fetch(source: ModelSource, uri: str | None, folder: Path, where: str,
           shown: str) -> tuple[dict[str, Any], Path]:
    """The registry's (or run's) record of the model, and its files downloaded to ``folder``."""
    try:
        import mlflow.artifacts
        from mlflow.tracking import MlflowClient
    except Exception as e:
        raise ModelError(f"{where}: mlflow cannot be imported to resolve it ({e})") from None
    from fairgate.integrations.mlflow_worker import connection_problem, why

    registry = os.environ.get("MLFLOW_REGISTRY_URI", "").strip() or uri
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=registry)
        info: dict[str, Any] = {"kind": source.kind}
        download = source.given
        if source.registered:
            assert source.name is not None
            if source.kind == "alias":
                assert source.alias is not None
                mv = client.get_model_version_by_alias(source.name, source.alias)
            else:
                mv = client.get_model_version(source.name, str(source.version))
            if str(mv.status) != "READY":
                raise ModelError(f"{where}: version {mv.version} of {source.name!r} is "
                                 f"{mv.status}, not READY")
            info.update(registered_model=source.name, version=str(mv.version),
                        alias=source.alias, aliases=sorted(mv.aliases or []),
                        run_id=mv.run_id or None, version_source=mv.source,
                        model_id=_model_id(mv.source) or getattr(mv, "model_id", None))
            download = f"models:/{source.name}/{mv.version}"  # pinned: an alias may move
        elif source.kind == "logged_model":
            lm = client.get_logged_model(str(source.model_id))
            if str(getattr(lm.status, "value", lm.status)) != "READY":
                raise ModelError(f"{where}: the logged model is {lm.status}, not READY")
            info.update(model_id=lm.model_id, name=lm.name, run_id=lm.source_run_id)
        else:
            run = client.get_run(str(source.run_id))
            info.update(run_id=run.info.run_id, artifact_path=source.artifact_path,
                        experiment_id=run.info.experiment_id)
        got = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=download, dst_path=str(folder), tracking_uri=client.tracking_uri,
            registry_uri=registry))
    except ModelError:
        raise
    except Exception as e:
        if connection_problem(e):
            raise ModelError(f"{where}: the MLflow server at {shown} cannot be reached "
                             f"({why(e)})") from None
        raise ModelError(f"{where}: {why(e)} (MLflow at {shown})") from None
    if not got.resolve().is_relative_to(folder.resolve()):
        raise ModelError(f"{where}: MLflow returned {got}, outside the download folder; "
                         "refusing to read it")
    return info, got


def _model_id(version_source: str | None) -> str | None:
    """MLflow 3: a version's ``source`` is ``models:/m-…``; its model_id is empty over REST."""
    if version_source and version_source.startswith("models:/") and "/" not in version_source[8:]:
        return version_source[8:]
    return None


def _listing(root: Path, limit: int = 12) -> str:
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return shown or "nothing"


def _model_file(got: Path, where: str) -> tuple[Path, list[str] | None]:
    """The ONNX file of a downloaded model, and the MLmodel's flavors (None without MLmodel)."""
    import yaml

    if got.is_file():
        if got.suffix.lower() != ".onnx":
            raise ModelError(f"{where}: the artifact is a file {got.name!r}, not an .onnx model "
                             "or an MLflow model folder")
        return got, None
    mlmodel = got / "MLmodel"
    if mlmodel.exists():
        raw = read_regular_file(mlmodel, MLMODEL_LIMIT, ModelError, where=f"{where}: MLmodel",
                                what="MLmodel file")
        try:
            meta = yaml.safe_load(raw.decode("utf-8"))
        except Exception as e:
            raise ModelError(f"{where}: its MLmodel is not readable YAML ({type(e).__name__})") from None
        flavors = meta.get("flavors") if isinstance(meta, dict) else None
        if not isinstance(flavors, dict) or not flavors:
            raise ModelError(f"{where}: its MLmodel lists no flavors")
        names = sorted(str(k) for k in flavors)
        onnx = flavors.get("onnx")
        if onnx is None:
            raise ModelError(
                f"{where}: not an ONNX model: its MLmodel has the flavors {', '.join(names)}, "
                "and fairgate reads the onnx flavor only (log the model with "
                "mlflow.onnx.log_model, or gate its logged predictions with "
                "--teacher-scores/--student-scores)")
        data = onnx.get("data") if isinstance(onnx, dict) else None
        if not isinstance(data, str) or not data or os.path.isabs(data) or \
                any(p == ".." for p in PurePosixPath(data).parts):
            raise ModelError(f"{where}: the onnx flavor's data {data!r} is not a file name "
                             "inside the model folder")
        path = got / data
        if not path.is_file():
            raise ModelError(f"{where}: the onnx flavor names {data!r}, which the downloaded "
                             f"folder does not hold (it holds {_listing(got)})")
        return path, names
    found = sorted(p for p in got.rglob("*.onnx") if p.is_file())
    if len(found) == 1:
        return found[0], None
    if not found:
        raise ModelError(f"{where}: no MLmodel and no .onnx file in the downloaded folder (it "
                         f"holds {_listing(got)})")
    raise ModelError(f"{where}: ambiguous: no MLmodel and {len(found)} .onnx files ("
                     f"{', '.join(p.relative_to(got).as_posix() for p in found[:12])}); point "
                     "the URI at one of them")


def _hashed_files(root: Path, where: str) -> list[dict[str, Any]]:
    """Every file of the downloaded model: regular files only (no link, FIFO or device)."""
    out: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            rel = path.relative_to(root).as_posix()
            if not stat.S_ISREG(mode):
                raise ModelError(f"{where}: the downloaded folder holds {rel!r}, which is not a "
                                 "regular file (a link or a special file); refusing to read it")
            if len(out) >= MAX_FILES:
                raise ModelError(f"{where}: the downloaded folder holds more than {MAX_FILES:,} "
                                 "files; that is not one ONNX model")
            out.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return sorted(out, key=lambda f: f["path"])


def _check_graph(path: Path, where: str) -> None:
    """The graph parses and its external data stays in the model's folder (named by URI)."""
    import onnx

    from fairgate.inputs.model import _check_external_data, _line

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{where}: {path.name} is not an ONNX model ({type(e).__name__}: "
                         f"{_line(e)})") from None
    _check_external_data(proto, path, f"{where} ({path.name})")
