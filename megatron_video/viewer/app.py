"""`mvideo view`: the dataset as the model will consume it, on a localhost web page (FastAPI).

Every route is a GET that reads: the catalog joined with its feature sets, narrowed by a dataset
version and a filter expression through `selected_catalog` and `apply_filter`, the very functions
the training loader calls, so the count on the page is the number of clips a run with that
`data.filter` / `data.version` reads. Clips stream straight out of their shards; the curation
ledger is opened read-only.
"""
from __future__ import annotations

import math
import pathlib
import threading

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response

from curator.layout import curated_dirs
from curator.ledger import read_outcomes
from megatron_video.config import ConfigError
from megatron_video.data.catalog import SHARD_PATH, apply_filter, feature_set_files, is_validation_key
from megatron_video.data.dataset import caption_of
from megatron_video.data.selection import selected_catalog
from megatron_video.data.shard_members import ShardMembers
from megatron_video.data.versions import list_versions

PAGE = pathlib.Path(__file__).with_name("page.html")
HISTOGRAM_BINS = 20


def _catalog_signature(root: pathlib.Path) -> tuple:
    """Changes whenever a catalog file is added, replaced or removed (the page then sees it)."""
    files = [p for d in curated_dirs(root) for p in sorted((d / "catalog").rglob("*")) if p.is_file()]
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def _json_value(value):
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None if pd.isna(value) else str(value)


class CatalogView:
    """The joined catalog of one curated output, read again whenever its files change."""

    def __init__(self, root: str | pathlib.Path, val_fraction: float):
        self.root, self.val_fraction = pathlib.Path(root), val_fraction
        self._cache: dict[tuple, pd.DataFrame] = {}
        self._lock = threading.Lock()

    def versioned(self, version: str) -> pd.DataFrame:
        """The rows of dataset version `version` (every clip for ""), before the page's filter."""
        files = _catalog_signature(self.root)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[1] == files}
            if (version, files) not in self._cache:
                self._cache[(version, files)] = selected_catalog(self.root, "", version)
            return self._cache[(version, files)]

    def score_columns(self, frame: pd.DataFrame) -> list[str]:
        """Numeric feature-set columns (the scores), then the clip duration."""
        features = {c for files in feature_set_files(self.root).values() for c in pq.read_schema(files[0]).names}
        scores = [c for c in frame.columns if c in features and c != "key"
                  and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
        return scores + (["duration_s"] if "duration_s" in frame.columns else [])

    @staticmethod
    def histograms(full: pd.DataFrame, selected: pd.DataFrame, columns: list[str]) -> list[dict]:
        """Per column: bin edges over all clips, and counts of all clips and of the selected ones."""
        result = []
        for column in columns:
            values = full[column].dropna().astype(float)
            if not len(values):
                continue
            low, high = float(values.min()), float(values.max())
            edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
            result.append({"column": column, "edges": edges.tolist(),
                           "all": np.histogram(values, edges)[0].tolist(),
                           "selected": np.histogram(selected[column].dropna().astype(float), edges)[0].tolist()})
        return result

    def clips(self, expression: str, version: str, offset: int, limit: int) -> dict:
        full = self.versioned(version)
        selected = apply_filter(full, expression) if expression else full
        validation = sum(is_validation_key(k, self.val_fraction) for k in selected["key"])
        scores = self.score_columns(full)
        shown = []
        for _, row in selected.iloc[offset:offset + limit].iterrows():
            meta = {k: v for k, v in row.items() if not (np.isscalar(v) and pd.isna(v))}
            shown.append({"key": row["key"], "caption": caption_of(meta),
                          "scores": {c: _json_value(row[c]) for c in scores},
                          "fields": {c: _json_value(v) for c, v in meta.items() if c not in (SHARD_PATH, "key")}})
        return {"count": len(selected), "train": len(selected) - validation, "validation": validation,
                "total": len(full), "clips": shown, "histograms": self.histograms(full, selected, scores)}

    def shard_of(self, key: str) -> str | None:
        rows = self.versioned("")
        match = rows.loc[rows["key"] == key, SHARD_PATH]
        return str(match.iloc[0]) if len(match) else None

    def ledger(self) -> dict:
        by_status: dict[str, int] = {}
        failures: list[dict] = []
        for folder in curated_dirs(self.root):
            if (folder / "ledger.sqlite").is_file():
                statuses, reasons = read_outcomes(str(folder / "ledger.sqlite"))
                for status, count in statuses.items():
                    by_status[status] = by_status.get(status, 0) + count
                failures.extend(reasons)
        merged: dict[tuple, dict] = {}
        for entry in failures:
            group = merged.setdefault((entry["status"], entry["reason"]), {**entry, "inputs": 0})
            group["inputs"] += entry["inputs"]
        return {"inputs_by_status": by_status,
                "failures": sorted(merged.values(), key=lambda e: (-e["inputs"], e["status"], e["reason"]))}


def create_app(root: str | pathlib.Path, default_filter: str = "", default_version: str = "",
               val_fraction: float = 0.0, page_size: int = 48) -> FastAPI:
    view = CatalogView(root, val_fraction)
    members = ShardMembers()
    app = FastAPI(title="megatron-video dataset viewer", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/api/settings")
    def settings() -> dict:
        return {"root": str(root), "filter": default_filter, "version": default_version, "page_size": page_size,
                "val_fraction": val_fraction, "versions": [v.name for v in list_versions(root)],
                "feature_sets": list(feature_set_files(root))}

    @app.get("/api/clips")
    def clips(filter: str = "", version: str = "", offset: int = 0, limit: int = page_size):
        try:
            return view.clips(filter, version, max(offset, 0), min(max(limit, 0), 500))
        except ConfigError as err:
            return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/api/ledger")
    def ledger() -> dict:
        return view.ledger()

    @app.get("/clip/{key}.mp4")
    def clip(key: str) -> Response:
        shard = view.shard_of(key)
        if shard is None:
            raise HTTPException(404, f"no clip '{key}' in the catalog")
        return Response(members.read(shard, f"{key}.mp4"), media_type="video/mp4",
                        headers={"Cache-Control": "max-age=3600"})

    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
