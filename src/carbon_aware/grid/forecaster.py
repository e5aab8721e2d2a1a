"""Forecasting the next 24-48 h from a zone's own recent actuals, for sources without a forecast and
for the chain's fallback on the grid store.

Least squares per lead hour on features scaled by the last day's mean, so one model serves any grid:
the last hours, the same hour on each of the last seven days, its neighbours and its four-week mean,
the last six hours against the day before's, and the week's level (``LINEAR``). The target is the
hour's value against the same hour's weekly mean. Missing days are filled with the nearest whole day,
never made up from nothing: the model is fitted with histories cut short at random, so it forecasts
from one day of actuals and improves as the store fills. Fitted on the 2021-2022 Electricity Maps
traces only (``python -m carbon_aware.grid.forecaster --fit``); 2023 is kept for evaluation.

Gradient-boosted trees (LightGBM) on what this stage leaves were measured and dropped: on the 2023
evaluation they moved the oracle share by -0.007 to +0.007 (mean over the zones, 1 h and 4 h jobs,
one trigger a day or every hour), short of the 0.02 that would earn a dependency.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

WINDOW_H = 24 * 29  # hours of history the features read (29 days; a shorter history leaves features missing)
MIN_HISTORY_H = 24
DEFAULT_LEADS = 48
FEATURES = ("linear", "lead", "target_local_hour", "target_weekday", "now_local_hour", "last", "previous",
            "two_before", "slope_3h", *(f"same_hour_day_{d}" for d in range(1, 8)), "same_hour_7day_mean",
            "same_hour_28day_mean", "same_hour_neighbours", "now_vs_yesterday", "last_6h_mean",
            "day_before_last_6h_mean", "day_min", "day_max", "day_std", "week_mean", "four_week_mean")
# The linear stage: per lead hour, least squares on these (the shipped v1 model's inputs), on histories
# whose missing days are filled with the nearest whole day; the trees then model what it leaves.
LINEAR = ("last", "previous", "two_before", *(f"same_hour_day_{d}" for d in range(1, 8)),
          "same_hour_neighbours", "now_vs_yesterday", "last_6h_mean", "day_before_last_6h_mean",
          "same_hour_28day_mean", "week_mean")
MODEL_FILE = "history_model.json.gz"  # package data, next to this module
FIT_YEARS = ("2021", "2022")
REGION_TIMEZONES = {"GB": "Europe/London", "DE": "Europe/Berlin", "US-CAL-CISO": "America/Los_Angeles",
                    "CISO": "America/Los_Angeles", "US-TEX-ERCO": "America/Chicago",
                    "ERCO": "America/Chicago",
                    "US-NY-NYIS": "America/New_York", "NYIS": "America/New_York",
                    "US-MIDA-PJM": "America/New_York", "PJM": "America/New_York", "MISO": "America/Chicago",
                    "BPAT": "America/Los_Angeles", "AZPS": "America/Phoenix", "SOCO": "America/New_York"}
LEADS_PER_ORIGIN = 6  # leads sampled per training origin (keeps the fit small; every lead is seen)
SHORT_HISTORY_SHARE = 0.2  # training origins whose history is cut to 1-29 days, as a filling store has


def region_zone(region: str | None) -> ZoneInfo:
    return ZoneInfo(REGION_TIMEZONES.get(region or "", "UTC"))


def fill_gaps(window: np.ndarray) -> np.ndarray:
    """Fill gaps in (..., hours) windows: same hour the day before, then the last value, then the mean.
    (For the simple baselines; the model itself takes gaps as missing.)"""
    window = window.astype(float, copy=True)
    for _ in range(7):
        missing = np.isnan(window[..., 24:])
        if not missing.any():
            break
        window[..., 24:][missing] = window[..., :-24][missing]
    if np.isnan(window).any():
        mean = np.nanmean(np.where(np.isnan(window), np.nan, window), axis=-1, keepdims=True)
        window = np.where(np.isnan(window), np.nan_to_num(mean, nan=0.0), window)
    return window


def local_calendar(start: float, hours: int, zone: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """(local hour, local weekday) of each of ``hours`` hours from epoch ``start`` (an hour boundary)."""
    days = int(np.ceil(hours / 24)) + 2
    offsets = np.empty(days)
    for d in range(days):  # a zone's UTC offset changes at most twice a year: one lookup per day
        moment = datetime.fromtimestamp(start + 86400 * d + 43200, tz=timezone.utc).astimezone(zone)
        offsets[d] = moment.utcoffset().total_seconds()
    t = start + 3600.0 * np.arange(hours)
    local = t + offsets[np.clip(((t - start) // 86400).astype(int), 0, days - 1)]
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return ((local // 3600) % 24).astype(np.float32), weekday.astype(np.float32)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    count = (~np.isnan(values)).sum(axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def fill_whole_days(windows: np.ndarray) -> np.ndarray:
    """For the linear stage: each missing hour takes the same hour of the nearest day that has it
    (a history shorter than the window repeats its days backwards), then :func:`fill_gaps`."""
    w = windows.astype(float, copy=True)
    for _ in range(WINDOW_H // 24):
        missing = np.isnan(w[..., :-24]) & ~np.isnan(w[..., 24:])
        if not missing.any():
            break
        w[..., :-24][missing] = w[..., 24:][missing]
    return fill_gaps(w)


def features(windows: np.ndarray, leads: np.ndarray, hour_of: np.ndarray, weekday_of: np.ndarray,
             now_hour: np.ndarray, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """windows: (n, WINDOW_H) hourly actuals (NaN = missing), last column = the latest hour; leads (n, k)
    hours ahead; hour_of / weekday_of (n, k) local calendar of each target; now_hour (n,).
    Returns (X of shape (n, k, len(FEATURES)) with the "linear" column left for the linear stage,
    scale (n,))."""
    n, k = leads.shape
    if scale is None:
        scale = _nanmean(windows[:, -24:], axis=1)
        scale = np.where(scale > 1e-6, scale, np.nan)
    w = windows / scale[:, None]
    last = WINDOW_H - 1
    rows = np.arange(n)[:, None]
    first_day = -(-leads // 24)  # the most recent day that has the target's hour in the past
    same = np.stack([w[rows, np.clip(last + leads - 24 * (first_day + d), 0, last)] for d in range(28)],
                    axis=-1)  # (n, k, 28): the target's hour on each of the last 28 days
    reach = last + leads[..., None] - 24 * (first_day[..., None] + np.arange(28)) >= 0
    same = np.where(reach, same, np.nan)
    week_same = _nanmean(same[..., :7], axis=-1)
    position = last + leads - 24 * first_day
    neighbours = np.stack([w[rows, np.clip(position - 1, 0, last)],
                           w[rows, np.where(position + 1 <= last, position + 1, position - 1)]], axis=-1)
    X = np.empty((n, k, len(FEATURES)), dtype=np.float32)
    col = {name: i for i, name in enumerate(FEATURES)}
    per_origin = {"now_local_hour": now_hour, "last": w[:, -1], "previous": w[:, -2], "two_before": w[:, -3],
                  "slope_3h": w[:, -1] - w[:, -4], "now_vs_yesterday": w[:, -1] - w[:, -25],
                  "last_6h_mean": _nanmean(w[:, -6:], 1),
                  "day_before_last_6h_mean": _nanmean(w[:, -30:-24], 1),
                  "day_min": np.nanmin(np.where(np.isnan(w[:, -24:]), np.inf, w[:, -24:]), axis=1),
                  "day_max": np.nanmax(np.where(np.isnan(w[:, -24:]), -np.inf, w[:, -24:]), axis=1),
                  "day_std": np.sqrt(_nanmean((w[:, -24:] - _nanmean(w[:, -24:], 1)[:, None]) ** 2, 1)),
                  "week_mean": _nanmean(w[:, -168:], 1),
                  "four_week_mean": _nanmean(w[:, -672:], 1)}
    for name, values in per_origin.items():
        X[:, :, col[name]] = values[:, None]
    X[:, :, col["lead"]] = leads
    X[:, :, col["target_local_hour"]] = hour_of
    X[:, :, col["target_weekday"]] = weekday_of
    X[:, :, col["same_hour_day_1"]:col["same_hour_day_7"] + 1] = same[..., :7]
    X[:, :, col["same_hour_7day_mean"]] = week_same
    X[:, :, col["same_hour_28day_mean"]] = _nanmean(same, axis=-1)
    X[:, :, col["same_hour_neighbours"]] = _nanmean(neighbours, axis=-1)
    X[:, :, col["linear"]] = np.nan
    X[~np.isfinite(X)] = np.nan
    return X, scale


def design(windows: np.ndarray, leads: np.ndarray,
           calendar: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tree features with missing values, linear-stage inputs with a bias column, scale)."""
    X, scale = features(windows, leads, *calendar)
    filled, _ = features(fill_whole_days(windows), leads, *calendar, scale=scale)
    columns = [FEATURES.index(name) for name in LINEAR]
    linear = np.concatenate([np.ones(leads.shape + (1,), dtype=np.float32), filled[..., columns]], axis=-1)
    return X, np.nan_to_num(linear), scale


def _calendar_for(start: float, length: int, origins: np.ndarray, leads: np.ndarray,
                  region: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hour, weekday = local_calendar(start, length + int(leads.max()) + 1, region_zone(region))
    targets = origins[:, None] + leads
    return hour[targets], weekday[targets], hour[origins]


def _windows(hourly: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(len(origins), WINDOW_H) windows ending at each origin (the latest observed hour), NaN before
    the series starts."""
    padded = np.concatenate([np.full(WINDOW_H, np.nan), np.asarray(hourly, dtype=float)])
    index = np.asarray(origins)[:, None] + WINDOW_H + np.arange(-WINDOW_H + 1, 1)[None, :]
    return padded[index]


_LOADED: dict[tuple[str, int], "HistoryModel"] = {}


@dataclass
class HistoryModel:
    coefficients: np.ndarray  # (leads, 1 + len(LINEAR)): least squares, per lead hour
    fitted_on: list[str]

    @property
    def leads(self) -> int:
        return self.coefficients.shape[0]

    def predict(self, history: np.ndarray, leads: int | None = None, end: datetime | None = None,
                region: str | None = None) -> np.ndarray:
        """The next ``leads`` hours after the last value of ``history`` (hourly, NaN allowed), which
        ends at ``end`` (for the calendar; default: now) in ``region``'s grid."""
        leads = leads or self.leads
        history = np.asarray(history, dtype=float)[-WINDOW_H:]
        if (~np.isnan(history)).sum() < MIN_HISTORY_H:
            raise ValueError(f"history forecaster needs at least {MIN_HISTORY_H} hours of actuals, "
                             f"got {(~np.isnan(history)).sum()}")
        end = end or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        start = end.timestamp() - 3600 * len(history)
        return self.predict_many(history, np.array([len(history) - 1]), leads, start, region)[0]

    def predict_many(self, hourly: np.ndarray, origins: np.ndarray, leads: int, start: float = 0.0,
                     region: str | None = None) -> np.ndarray:
        """Forecasts made at many origins of one series at once (origins index the latest observed hour;
        ``start`` is the epoch of ``hourly[0]``, for the calendar). Returns (len(origins), leads)."""
        if leads > self.leads:
            raise ValueError(f"model forecasts {self.leads} h ahead, asked for {leads}")
        origins = np.asarray(origins, dtype=int)
        lead_grid = np.broadcast_to(np.arange(1, leads + 1), (len(origins), leads))
        calendar = _calendar_for(start, len(hourly), origins, lead_grid, region)
        _, linear_inputs, scale = design(_windows(hourly, origins), lead_grid, calendar)
        return np.einsum("nkf,kf->nk", linear_inputs, self.coefficients[:leads]) * scale[:, None]

    def save(self, path: str | Path) -> str:
        """Write the model (gzip JSON: features, fit metadata, coefficients); returns its sha256."""
        body = json.dumps({"features": list(FEATURES), "linear": list(LINEAR), "window_hours": WINDOW_H,
                           "fitted_on": self.fitted_on,
                           "coefficients": np.round(self.coefficients, 8).tolist()}, indent=0).encode()
        Path(path).write_bytes(gzip.compress(body, mtime=0))
        return hashlib.sha256(body).hexdigest()

    @classmethod
    def load(cls, path: str | Path | None = None) -> "HistoryModel":
        """The model in ``path`` (default: the one shipped in the package), read once per process (and
        again when the file changes)."""
        path = Path(path) if path is not None else shipped_model_path()
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        if key not in _LOADED:
            _LOADED[key] = cls._read(path)
        return _LOADED[key]

    @classmethod
    def _read(cls, path: Path) -> "HistoryModel":
        data = json.loads(gzip.decompress(Path(path).read_bytes()))
        made_for = (data["features"], data["linear"], data["window_hours"])
        if made_for != (list(FEATURES), list(LINEAR), WINDOW_H):
            raise ValueError(f"{path}: made for other features; "
                             "run python -m carbon_aware.grid.forecaster --fit")
        return cls(np.asarray(data["coefficients"], dtype=float), data["fitted_on"])


def shipped_model_path() -> Path:
    """The fitted model shipped as package data (an installed wheel or an editable checkout)."""
    from importlib.resources import files

    return Path(str(files("carbon_aware.grid").joinpath(MODEL_FILE)))


def training_rows(hourly: np.ndarray, start: float, region: str | None, leads: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(X, linear inputs, lead, relative target) from every origin of one series: a few random leads
    each, some histories cut short to 1-29 days."""
    hourly = np.asarray(hourly, dtype=float)
    origins = np.arange(24 * 8, len(hourly) - leads - 1)
    lead_grid = rng.integers(1, leads + 1, size=(len(origins), LEADS_PER_ORIGIN))
    targets = hourly[origins[:, None] + lead_grid]
    windows = _windows(hourly, origins)
    short = rng.random(len(origins)) < SHORT_HISTORY_SHARE
    kept = rng.integers(MIN_HISTORY_H, WINDOW_H, size=len(origins))
    cut = np.arange(WINDOW_H)[None, :] < WINDOW_H - kept[short, None]
    windows[short] = np.where(cut, np.nan, windows[short])
    keep = ~np.isnan(targets).any(axis=1) & (np.isnan(windows[:, -24:]).sum(axis=1) < 6)
    origins, lead_grid, targets, windows = origins[keep], lead_grid[keep], targets[keep], windows[keep]
    calendar = _calendar_for(start, len(hourly), origins, lead_grid, region)
    X, linear, scale = design(windows, lead_grid, calendar)
    return (X.reshape(-1, len(FEATURES)), linear.reshape(-1, linear.shape[-1]), lead_grid.reshape(-1),
            (targets / scale[:, None]).reshape(-1))


def fit(series: list[tuple[np.ndarray, float, str | None]], names: list[str],
        leads: int = DEFAULT_LEADS) -> HistoryModel:
    """Fit on (hourly actuals, epoch of the first hour, region) series; deterministic for a given input."""
    rng = np.random.default_rng(0)
    parts = [training_rows(hourly, start, region, leads, rng) for hourly, start, region in series]
    _, A, lead, y = (np.concatenate([p[i] for p in parts]) for i in range(4))
    ok = np.isfinite(y)
    A, lead, y = A[ok].astype(float), lead[ok], y[ok]
    coefficients = np.empty((leads, A.shape[1]))
    ridge = np.eye(A.shape[1])
    ridge[0, 0] = 0.0  # no penalty on the bias
    for h in range(1, leads + 1):
        rows = lead == h
        coefficients[h - 1] = np.linalg.solve(A[rows].T @ A[rows] + ridge, A[rows].T @ y[rows])
    return HistoryModel(coefficients, names)


def persistence(hourly: np.ndarray, origins: np.ndarray, leads: int) -> np.ndarray:
    """'Same time yesterday' (the day before that for leads past 24 h)."""
    return hourly[_same_hour(origins, leads, 0)]


def weekly_profile(hourly: np.ndarray, origins: np.ndarray, leads: int) -> np.ndarray:
    """The same hour averaged over the last seven days."""
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack([hourly[_same_hour(origins, leads, d)] for d in range(7)]), axis=0)


def _same_hour(origins: np.ndarray, leads: int, days_back: int) -> np.ndarray:
    """(origins, leads) indices of the same hour ``days_back`` days before the most recent past day."""
    h = np.arange(1, leads + 1)
    return np.asarray(origins)[:, None] + h[None, :] - 24 * (-(-h // 24) + days_back)[None, :]


def fit_files(data_dir: Path) -> tuple[list[tuple[np.ndarray, float, str]], list[str]]:
    """The 2021-2022 Electricity Maps traces, each zone's two years joined into one series."""
    from carbon_aware.grid.traces import load_trace

    folder = data_dir / "electricitymaps_via_green-dcc"
    paths = sorted(p for year in FIT_YEARS for p in folder.glob(f"*_{year}_hourly.csv"))
    if not paths:
        raise FileNotFoundError(f"no 2021-2022 Electricity Maps traces under {data_dir}")
    series: dict[str, list] = {}
    for path in paths:
        trace = load_trace(path)
        start, hourly = trace.hourly()
        series.setdefault(trace.region, []).append((start, hourly))
    joined = []
    for region, parts in series.items():
        parts.sort(key=lambda part: part[0])
        joined.append((np.concatenate([h for _, h in parts]), parts[0][0], region))
    return joined, [p.name for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_aware.grid.forecaster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="store_true", help="fit on the 2021-2022 traces and write the model")
    parser.add_argument("--data-dir", help="the folder of trace CSVs (default: carbon/ in CARBON_DATA_DIR)")
    parser.add_argument("--out", help="where to write the model (default: the package's own file)")
    args = parser.parse_args(argv)
    if not args.fit:
        parser.print_help()
        return 0
    from carbon_aware.settings import data_dir

    series, names = fit_files(Path(args.data_dir) if args.data_dir else data_dir() / "carbon")
    model = fit(series, names)
    out = Path(args.out) if args.out else shipped_model_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = model.save(out)
    print(f"fitted on {len(names)} traces ({', '.join(names)}) -> {out} "
          f"(sha256 of the JSON {digest[:16]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
