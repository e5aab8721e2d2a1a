"""How the Carbon page writes a value: every number carries its unit; the templates do all the HTML."""
from __future__ import annotations

from datetime import datetime
from typing import Any


def mass(kg: float | None) -> str:
    if kg is None:
        return "n/a"
    if abs(kg) >= 1:
        return f"{kg:.3g} kg CO₂e"
    if abs(kg) >= 1e-3:
        return f"{kg * 1e3:.3g} g CO₂e"
    return f"{kg * 1e6:.3g} mg CO₂e"


def energy(kwh: float | None) -> str:
    if kwh is None:
        return "n/a"
    return f"{kwh:.3g} kWh" if abs(kwh) >= 1 else f"{kwh * 1e3:.3g} Wh"


def intensity(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} g/kWh"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def accuracy(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def shown(text: str, time: str | None = None, css: str = "", sub: str = "") -> dict[str, Any]:
    """What a template shows for one value (see templates/shown.html)."""
    return {"text": text, "time": time, "css": css, "sub": sub}


def compressed(seconds: float | None, compression: float | None) -> str:
    """A demo's wait runs faster than grid time: say how much grid time it stood for."""
    if seconds is None or not compression or compression == 1:
        return ""
    return f"time ×{compression:g}: {duration(seconds * compression)} of grid time"


def moment(iso: str | None, seconds: bool = True) -> dict[str, Any]:
    """UTC on the server; the page's script adds the reader's local time beside it."""
    if not iso:
        return shown("n/a")
    at = datetime.fromisoformat(iso)
    return shown(at.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC",
                 time=at.isoformat())
