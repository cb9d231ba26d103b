"""A procedural demo dataset: five Indonesian dishes drawn with PIL and numpy.

Real food photos cannot be downloaded everywhere foodlab runs, so demos and tests draw their
own. Each class has its own plate, colours, textures and shapes, but position, scale, rotation,
lighting, background and garnish vary at random, and the classes share colours (brown sauces,
white plates), so a CNN has to learn shapes and textures rather than one mean colour.

Every image depends only on (seed, class, index): the same arguments give the same bytes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.storage import atomic_write

DISHES = ("bakso", "gado-gado", "nasi-goreng", "rendang", "sate")

RGB = tuple[int, int, int]
Point = tuple[float, float]


def _shade(rng: np.random.Generator, base: RGB, spread: int = 20) -> RGB:
    """`base` with a little random variation, so no class has one exact colour."""
    noise = rng.integers(-spread, spread + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(base) + noise, 0, 255))  # type: ignore[return-value]


def _blob(
    rng: np.random.Generator,
    centre: Point,
    radius: float,
    roughness: float = 0.25,
    points: int = 14,
) -> list[Point]:
    """An irregular closed outline around `centre` (meat chunks, sauce pools, egg whites)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = radius * (1 + rng.uniform(-roughness, roughness, points))
    xs, ys = centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _ellipse(
    draw: ImageDraw.ImageDraw,
    centre: Point,
    rx: float,
    ry: float,
    fill: RGB | None,
    outline: RGB | None = None,
    width: int = 1,
) -> None:
    x, y = centre
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=fill, outline=outline, width=width)


def _around(rng: np.random.Generator, centre: Point, radius: float) -> Point:
    """A random point within `radius` of `centre`, uniform over the disc."""
    angle, dist = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform())
    return centre[0] + dist * np.cos(angle), centre[1] + dist * np.sin(angle)


def _plate(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    colour = _shade(rng, [(240, 240, 235), (235, 225, 200), (200, 220, 235)][rng.integers(3)])
    rim = (int(colour[0] * 0.85), int(colour[1] * 0.85), int(colour[2] * 0.85))
    _ellipse(draw, c, r, r, fill=rim)
    _ellipse(draw, c, r * 0.82, r * 0.82, fill=colour)


def _egg(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float, fried: bool
) -> None:
    if fried:
        draw.polygon(_blob(rng, c, r, 0.3), fill=_shade(rng, (248, 246, 236), 6))
        _ellipse(draw, c, r * 0.38, r * 0.38, fill=_shade(rng, (250, 170, 30), 12))
    else:  # a boiled egg cut in half
        _ellipse(draw, c, r, r * 0.75, fill=_shade(rng, (245, 245, 238), 6))
        _ellipse(draw, c, r * 0.5, r * 0.4, fill=_shade(rng, (245, 200, 60), 12))


def _krupuk(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    """Prawn crackers: a pale, very irregular flake; any dish may have one."""
    draw.polygon(_blob(rng, c, r, 0.45, 20), fill=_shade(rng, (240, 215, 190), 10))


def _nasi_goreng(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    _plate(draw, rng, c, r)
    rice = _shade(rng, (190, 115, 55), 25)
    draw.polygon(_blob(rng, c, r * 0.62, 0.15), fill=rice)
    grain = max(1.5, r / 28)
    # Mostly rice grains, a few toasted ones, and specks of chilli and spring onion.
    tints = [rice, (215, 150, 80), (150, 80, 35), (220, 60, 40), (80, 150, 60)]
    for _ in range(int(260 * (r / 64) ** 2)):
        colour = _shade(rng, tints[rng.choice(5, p=[0.6, 0.2, 0.12, 0.04, 0.04])], 15)
        _ellipse(draw, _around(rng, c, r * 0.6), grain * 1.6, grain, fill=colour)
    if rng.uniform() < 0.7:
        _egg(draw, rng, _around(rng, c, r * 0.25), r * 0.3, fried=True)
    if rng.uniform() < 0.5:  # cucumber slices on the rim
        for _ in range(3):
            p = _around(rng, c, r * 0.7)
            _ellipse(draw, p, r * 0.1, r * 0.1, fill=(60, 130, 50))
            _ellipse(draw, p, r * 0.07, r * 0.07, fill=(200, 225, 170))


def _rendang(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    _plate(draw, rng, c, r)
    draw.polygon(_blob(rng, c, r * 0.65, 0.3), fill=_shade(rng, (110, 50, 25), 15))
    if rng.uniform() < 0.4:  # a side of white rice
        draw.polygon(_blob(rng, _around(rng, c, r * 0.3), r * 0.3, 0.2), fill=(235, 232, 220))
    for _ in range(rng.integers(5, 10)):
        centre = _around(rng, c, r * 0.5)
        draw.polygon(
            _blob(rng, centre, r * rng.uniform(0.12, 0.2), 0.35, 9),
            fill=_shade(rng, (75, 35, 18), 15),
        )
        for _ in range(6):  # the dry, flaky crust of slow-cooked coconut
            _ellipse(
                draw,
                _around(rng, centre, r * 0.12),
                r * 0.02,
                r * 0.02,
                fill=_shade(rng, (140, 70, 30), 20),
            )
    for _ in range(rng.integers(4, 12)):  # chilli flakes
        _ellipse(draw, _around(rng, c, r * 0.6), r * 0.015, r * 0.015, fill=(200, 40, 20))


def _sate(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    _plate(draw, rng, c, r)
    sauce = _around(rng, c, r * 0.3)
    draw.polygon(_blob(rng, sauce, r * 0.3, 0.2), fill=_shade(rng, (170, 100, 40), 15))
    for _ in range(5):  # sweet soy drizzle over the peanut sauce
        draw.line(
            [_around(rng, sauce, r * 0.25), _around(rng, sauce, r * 0.25)],
            fill=(50, 25, 15),
            width=max(1, int(r * 0.02)),
        )
    tilt = rng.uniform(-0.4, 0.4)
    for k in range(rng.integers(3, 6)):
        y = c[1] - r * 0.45 + k * r * 0.22
        start = (c[0] - r * 0.85, y + tilt * r * 0.5)
        end = (c[0] + r * 0.85, y - tilt * r * 0.5)
        draw.line([start, end], fill=_shade(rng, (215, 185, 130), 10), width=max(1, int(r / 30)))
        for t in np.linspace(0.15, 0.6, rng.integers(3, 6)):
            p = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
            draw.rounded_rectangle(
                (p[0] - r * 0.08, p[1] - r * 0.07, p[0] + r * 0.08, p[1] + r * 0.07),
                radius=r * 0.03,
                fill=_shade(rng, (125, 60, 25), 20),
            )
            _ellipse(draw, _around(rng, p, r * 0.04), r * 0.02, r * 0.02, fill=(40, 20, 10))


def _bakso(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    bowl = _shade(rng, [(235, 235, 230), (200, 60, 50), (230, 200, 120)][rng.integers(3)])
    _ellipse(draw, c, r, r, fill=bowl)
    _ellipse(draw, c, r * 0.8, r * 0.8, fill=_shade(rng, (200, 160, 100), 20))  # broth
    for _ in range(int(25 * r / 64)):  # noodles
        p, q = _around(rng, c, r * 0.7), _around(rng, c, r * 0.7)
        draw.arc(
            (min(p[0], q[0]), min(p[1], q[1]), max(p[0], q[0]) + 2, max(p[1], q[1]) + 2),
            0,
            180,
            fill=_shade(rng, (235, 210, 120), 10),
            width=max(1, int(r / 40)),
        )
    for _ in range(rng.integers(3, 7)):
        p, radius = _around(rng, c, r * 0.5), r * rng.uniform(0.13, 0.2)
        _ellipse(draw, p, radius, radius, fill=_shade(rng, (120, 95, 80), 15))
        shine = (p[0] - radius * 0.35, p[1] - radius * 0.35)
        _ellipse(draw, shine, radius * 0.3, radius * 0.3, fill=_shade(rng, (165, 140, 125), 10))
    for _ in range(rng.integers(5, 15)):  # spring onion rings
        _ellipse(
            draw,
            _around(rng, c, r * 0.7),
            r * 0.03,
            r * 0.03,
            fill=None,
            outline=(70, 160, 60),
            width=max(1, int(r / 50)),
        )


def _gado_gado(draw: ImageDraw.ImageDraw, rng: np.random.Generator, c: Point, r: float) -> None:
    _plate(draw, rng, c, r)
    for _ in range(rng.integers(6, 11)):  # greens
        green = _shade(rng, [(60, 140, 50), (110, 170, 70), (40, 100, 40)][rng.integers(3)])
        draw.polygon(_blob(rng, _around(rng, c, r * 0.5), r * 0.2, 0.5, 8), fill=green)
    for _ in range(int(20 * r / 64)):  # bean sprouts
        p = _around(rng, c, r * 0.6)
        draw.line([p, _around(rng, p, r * 0.12)], fill=(240, 240, 215), width=max(1, int(r / 40)))
    for _ in range(rng.integers(2, 5)):  # tofu and tempeh
        p, half = _around(rng, c, r * 0.5), r * rng.uniform(0.07, 0.11)
        colour = _shade(rng, [(225, 190, 110), (150, 110, 60)][rng.integers(2)], 10)
        draw.rectangle((p[0] - half, p[1] - half, p[0] + half, p[1] + half), fill=colour)
    for _ in range(rng.integers(1, 3)):
        _egg(draw, rng, _around(rng, c, r * 0.5), r * 0.13, fried=False)
    for _ in range(rng.integers(3, 7)):  # peanut sauce poured across
        draw.line(
            [_around(rng, c, r * 0.6) for _ in range(3)],
            fill=_shade(rng, (175, 105, 45), 15),
            width=max(2, int(r / 14)),
            joint="curve",
        )


DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, np.random.Generator, Point, float], None]] = {
    "bakso": _bakso,
    "gado-gado": _gado_gado,
    "nasi-goreng": _nasi_goreng,
    "rendang": _rendang,
    "sate": _sate,
}


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A table: wood grain, checked cloth or speckled stone, in a random colour."""
    base = np.array(
        _shade(
            rng,
            [(150, 105, 65), (200, 190, 175), (90, 90, 95), (180, 60, 50), (60, 90, 130)][
                rng.integers(5)
            ],
            30,
        ),
        float,
    )
    y, x = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(3)
    if kind == 0:
        pattern = 0.12 * np.sin(2 * np.pi * (rng.uniform(4, 12) * y + 0.3 * np.sin(6 * x)))
    elif kind == 1:
        cells = rng.uniform(4, 10)
        pattern = 0.12 * (((x * cells).astype(int) + (y * cells).astype(int)) % 2 - 0.5)
    else:
        pattern = rng.normal(0, 0.06, (size, size))
    pixels = base[None, None, :] * (1 + pattern[..., None])
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _lighting(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """A light gradient from a random direction, a colour cast, sensor noise and a little blur."""
    size = image.size[0]
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0.1, 0.5) * (x * np.cos(angle) + y * np.sin(angle))
    cast = rng.uniform(0.88, 1.12, 3) * rng.uniform(0.75, 1.2)
    pixels = np.asarray(image, float) * gradient[..., None] * cast
    pixels += rng.normal(0, rng.uniform(2, 8), pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def draw_dish(dish: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One `size` x `size` RGB photo of `dish`, drawn at twice the size and downsampled."""
    canvas = 2 * size
    image = _background(rng, canvas)
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    radius = canvas * rng.uniform(0.3, 0.48)
    DRAWERS[dish](ImageDraw.Draw(layer), rng, (canvas / 2, canvas / 2), radius)
    layer = layer.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)
    offset = rng.uniform(-0.18, 0.18, 2) * canvas
    image.paste(layer, (int(offset[0]), int(offset[1])), layer)
    image = _lighting(rng, image)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def render_dataset(
    per_class: int, size: int, seed: int = 0, dishes: Sequence[str] = DISHES
) -> Iterator[tuple[str, bytes]]:
    """Yield (relative path, JPEG bytes) for `per_class` images of each dish."""
    for dish in dishes:
        class_index = DISHES.index(dish)  # a dish looks the same whichever others are drawn
        for index in range(per_class):
            rng = np.random.default_rng([seed, class_index, index])
            buffer = io.BytesIO()
            draw_dish(dish, size, rng).save(buffer, format="JPEG", quality=90)
            yield f"{dish}/{dish}-{index:04d}.jpg", buffer.getvalue()


def write_dataset(
    out: Path, per_class: int, size: int, seed: int = 0, dishes: Sequence[str] = DISHES
) -> Path:
    """Write the demo dataset in ImageFolder layout (out/<dish>/<dish>-0000.jpg); return out."""
    for relative, data in render_dataset(per_class, size, seed, dishes):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out


def write_dataset_zip(
    out: Path, per_class: int, size: int, seed: int = 0, dishes: Sequence[str] = DISHES
) -> Path:
    """Write the demo dataset as a .zip with the class folders at its root; return out."""
    with atomic_write(out) as handle, zipfile.ZipFile(handle, "w") as archive:
        for relative, data in render_dataset(per_class, size, seed, dishes):
            # JPEGs do not compress further; storing them keeps zipping fast.
            archive.writestr(relative, data, compress_type=zipfile.ZIP_STORED)
    return out
