"""Draws assets/icon.png, the pack's icon in the Comfy Registry (400 x 400, under 800 x 400).

Run: python assets/make_icon.py. Ours, drawn here with PIL primitives: a flipbook whose fanned pages
show a little figure mid-wave, the motion the pack's demo makes.
"""
import math
import os

from PIL import Image, ImageDraw

S = 400
HERE = os.path.dirname(os.path.abspath(__file__))
INK = (40, 36, 60)
PAGE = (255, 252, 244)
ACCENT = [(255, 179, 71), (255, 128, 102), (122, 184, 255)]


def figure(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, wave: float, colour, ink=INK) -> None:
    """A stick figure waving: its right forearm ``wave`` radians from upright."""
    w = max(2, int(7 * s))
    head, neck, hip = (cx, cy - 70 * s), (cx, cy - 40 * s), (cx, cy + 25 * s)
    d.line([neck, hip], fill=ink, width=w)
    d.line([neck, (cx - 30 * s, cy - 10 * s), (cx - 42 * s, cy + 18 * s)], fill=ink, width=w, joint="curve")
    elbow = (cx + 32 * s, cy - 44 * s)
    hand = (elbow[0] + 30 * s * math.sin(wave), elbow[1] - 30 * s * math.cos(wave))
    d.line([neck, elbow, hand], fill=ink, width=w, joint="curve")
    for side in (-1, 1):
        knee = (hip[0] + side * 16 * s, hip[1] + 35 * s)
        d.line([hip, knee, (knee[0] + side * 6 * s, knee[1] + 35 * s)], fill=ink, width=w, joint="curve")
    r = 20 * s
    d.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], fill=colour, outline=ink, width=w)


def main() -> str:
    img = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([12, 12, S - 12, S - 12], radius=64, fill=(52, 48, 82, 255))
    # the book's spine and three pages fanned from their bottom-left corner, back to front, each a
    # later frame of the wave; the front page keeps faint traces of the earlier arm positions
    d.rounded_rectangle([70, 318, 330, 344], radius=10, fill=INK + (255,))
    waves = (-0.7, -0.1, 0.5)
    for i, (angle, colour) in enumerate(zip((16, 8, 0), ACCENT)):
        page = Image.new("RGBA", (440, 520), (0, 0, 0, 0))
        pd = ImageDraw.Draw(page)
        pd.rounded_rectangle([220, 10, 439, 259], radius=14, fill=PAGE + (255,), outline=INK, width=5)
        if i == 2:
            for ghost in waves[:2]:
                figure(pd, 330, 150, 1.15, wave=ghost, colour=PAGE, ink=(205, 200, 215))
        figure(pd, 330, 150, 1.15, wave=waves[i], colour=colour)
        page = page.rotate(angle, resample=Image.BICUBIC, center=(220, 259))
        img.alpha_composite(page, (-130, 62))
    path = os.path.join(HERE, "icon.png")
    img.save(path, optimize=True)
    return path


if __name__ == "__main__":
    print(main())
