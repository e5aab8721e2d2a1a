"""Forecasting the next 24-48 h from recent actuals, for sources without a forecast.

A linear model per lead hour, on features scaled by the last day's mean so one set of
coefficients serves any grid: the last hours, the same hour on each of the last seven days
and averaged over four weeks, today's level against yesterday's, and the week's level. It is fitted on
2021-2022 Electricity Maps traces only (``python -m carbon_aware.forecaster --fit``); 2023 is
kept for evaluation.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WINDOW_H = 24 * 29  # hours of history the features read (29 days; shorter histories are padded)
MIN_HISTORY_H = 24
DEFAULT_LEADS = 48
FEATURES = ("bias", "last", "previous", "two_before", *(f"same_hour_day_{d}" for d in range(1, 8)),
            "same_hour_latest_day_neighbours", "day_before_last", "last_6h_mean", "day_before_last_6h_mean", "same_hour_28day_mean", "week_mean")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_PATH = PACKAGE_ROOT / "include" / "carbon" / "history_model.json"
FIT_YEARS = ("2021", "2022")
REGION_TIMEZONES = {"GB": "Europe/London", "DE": "Europe/Berlin", "US-CAL-CISO": "America/Los_Angeles",
                    "CISO": "America/Los_Angeles", "US-TEX-ERCO": "America/Chicago", "ERCO": "America/Chicago",
                    "US-NY-NYIS": "America/New_York", "NYIS": "America/New_York",
                    "US-MIDA-PJM": "America/New_York", "PJM": "America/New_York", "MISO": "America/Chicago",
                    "BPAT": "America/Los_Angeles", "AZPS": "America/Phoenix", "SOCO": "America/New_York"}


def fill_gaps(window: np.ndarray) -> np.ndarray:
    """Fill gaps in (..., hours) windows: same hour the day before, then the last value, then the mean."""
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


def _pad(history: np.ndarray) -> np.ndarray:
    """Left-pad a short history to WINDOW_H by repeating its last whole days (keeps hours aligned)."""
    history = np.asarray(history, dtype=float)[-WINDOW_H:]
    if len(history) < MIN_HISTORY_H:
        raise ValueError(f"history forecaster needs at least {MIN_HISTORY_H} hours of actuals, got {len(history)}")
    days = history[-(len(history) // 24) * 24:]
    copies = -(-(WINDOW_H - len(history)) // len(days))
    return np.concatenate([days] * copies + [history])[-WINDOW_H:]


def features(windows: np.ndarray, leads: int) -> tuple[np.ndarray, np.ndarray]:
    """windows: (n, WINDOW_H) filled hourly actuals, last column = the latest hour.
    Returns (X of shape (n, leads, len(FEATURES)), scale of shape (n,))."""
    n = windows.shape[0]
    scale = windows[:, -24:].mean(axis=1)
    scale = np.where(scale > 1e-6, scale, 1.0)
    w = windows / scale[:, None]
    X = np.empty((n, leads, len(FEATURES)))
    X[:, :, 0] = 1.0
    X[:, :, 1] = w[:, -1:]
    X[:, :, 2] = w[:, -2:-1]
    X[:, :, 3] = w[:, -3:-2]
    X[:, :, 12] = w[:, -25:-24]
    X[:, :, 13] = w[:, -6:].mean(axis=1, keepdims=True)
    X[:, :, 14] = w[:, -30:-24].mean(axis=1, keepdims=True)
    X[:, :, -1] = w[:, -168:].mean(axis=1, keepdims=True)
    last = WINDOW_H - 1
    for h in range(1, leads + 1):
        first_day = -(-h // 24)  # ceil(h / 24): the most recent day that has this hour in the past
        positions = [last + h - 24 * d for d in range(first_day, first_day + 7)]
        X[:, h - 1, 4:11] = w[:, positions]
        neighbours = [p for p in (positions[0] - 1, positions[0] + 1) if p <= last]
        X[:, h - 1, 11] = w[:, neighbours].mean(axis=1)
        X[:, h - 1, 15] = w[:, [last + h - 24 * d for d in range(first_day, first_day + 28)]].mean(axis=1)
    return X, scale


@dataclass
class HistoryModel:
    coefficients: np.ndarray  # (leads, len(FEATURES))
    fitted_on: list[str]

    @property
    def leads(self) -> int:
        return self.coefficients.shape[0]

    def predict(self, history: np.ndarray, leads: int | None = None, end=None, region: str | None = None) -> np.ndarray:
        """The next ``leads`` hours after the last value of ``history`` (hourly, NaN allowed)."""
        leads = leads or self.leads
        if leads > self.leads:
            raise ValueError(f"model forecasts {self.leads} h ahead, asked for {leads}")
        window = fill_gaps(_pad(history))[None, :]
        X, scale = features(window, leads)
        return np.einsum("nlf,lf->nl", X, self.coefficients[:leads])[0] * scale[0]

    def predict_many(self, hourly: np.ndarray, origins: np.ndarray, leads: int, start: float = 0.0,
                     region: str | None = None) -> np.ndarray:
        """Forecasts made at many origins of one series at once (origins index the latest observed hour)."""
        windows = fill_gaps(np.stack([hourly[o - WINDOW_H + 1:o + 1] for o in origins]))
        X, scale = features(windows, leads)
        return np.einsum("nlf,lf->nl", X, self.coefficients[:leads]) * scale[:, None]

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "window_hours": WINDOW_H, "fitted_on": self.fitted_on,
                "coefficients": np.round(self.coefficients, 8).tolist()}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL_PATH) -> "HistoryModel":
        data = json.loads(Path(path).read_text())
        if data["features"] != list(FEATURES) or data["window_hours"] != WINDOW_H:
            raise ValueError(f"{path}: made for other features; refit with python -m carbon_aware.forecaster --fit")
        return cls(np.asarray(data["coefficients"], dtype=float), data["fitted_on"])


def fit(series: list[np.ndarray], names: list[str], leads: int = DEFAULT_LEADS, ridge: float = 1.0) -> HistoryModel:
    """Least squares per lead hour over every hourly origin of every series (pooled, scale-free)."""
    rows, targets = [], []
    for hourly in series:
        hourly = np.asarray(hourly, dtype=float)
        windows = sliding_window_view(hourly, WINDOW_H + leads)
        history, future = windows[:, :WINDOW_H], windows[:, WINDOW_H:]
        keep = ~np.isnan(future).any(axis=1) & (np.isnan(history).mean(axis=1) < 0.1)
        X, scale = features(fill_gaps(history[keep]), leads)
        rows.append(X)
        targets.append(future[keep] / scale[:, None])
    X, y = np.concatenate(rows), np.concatenate(targets)
    coefficients = np.empty((leads, len(FEATURES)))
    eye = ridge * np.eye(len(FEATURES))
    eye[0, 0] = 0.0
    for lead in range(leads):
        A = X[:, lead, :]
        coefficients[lead] = np.linalg.solve(A.T @ A + eye, A.T @ y[:, lead])
    return HistoryModel(coefficients, names)


def _same_hour(origins: np.ndarray, leads: int, days_back: int) -> np.ndarray:
    """(origins, leads) indices of the same hour ``days_back`` days before the most recent past day."""
    h = np.arange(1, leads + 1)
    return np.asarray(origins)[:, None] + h[None, :] - 24 * (-(-h // 24) + days_back)[None, :]


def persistence(hourly: np.ndarray, origins: np.ndarray, leads: int) -> np.ndarray:
    """'Same time yesterday' (the day before that for leads past 24 h)."""
    return hourly[_same_hour(origins, leads, 0)]


def weekly_profile(hourly: np.ndarray, origins: np.ndarray, leads: int) -> np.ndarray:
    """The same hour averaged over the last seven days."""
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack([hourly[_same_hour(origins, leads, d)] for d in range(7)]), axis=0)


def fit_files(data_dir: Path) -> tuple[list[np.ndarray], list[str]]:
    from carbon_aware.trace import load_trace

    paths = sorted(p for year in FIT_YEARS for p in (data_dir / "electricitymaps_via_green-dcc").glob(f"*_{year}_hourly.csv"))
    if not paths:
        raise FileNotFoundError(f"no 2021-2022 Electricity Maps traces under {data_dir}")
    return [load_trace(p).hourly()[1] for p in paths], [p.name for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_aware.forecaster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="store_true", help="fit on the 2021-2022 traces and write the model")
    parser.add_argument("--data-dir", default=str(PACKAGE_ROOT.parent / "shared" / "data" / "carbon"))
    parser.add_argument("--out", default=str(DEFAULT_MODEL_PATH))
    args = parser.parse_args(argv)
    if not args.fit:
        parser.print_help()
        return 0
    series, names = fit_files(Path(args.data_dir))
    model = fit(series, names)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(model.to_json(), indent=1) + "\n")
    print(f"fitted on {len(names)} traces ({', '.join(names)}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
