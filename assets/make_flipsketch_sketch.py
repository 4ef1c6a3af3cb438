"""Draws assets/flipsketch_cat_sketch.png: a cat in black strokes on white, the sketch the shipped
FlipSketch workflow animates ("a cat is walking"). Run: python assets/make_flipsketch_sketch.py"""
import os

from PIL import Image, ImageDraw


def draw_cat(size: int = 256, width: int = 4) -> Image.Image:
    s = size / 256
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)

    def p(*xy):
        return [v * s for v in xy]

    d.ellipse(p(70, 120, 190, 185), outline="black", width=width)           # body
    d.ellipse(p(150, 70, 215, 130), outline="black", width=width)           # head
    d.line(p(158, 85, 162, 52, 180, 73), fill="black", width=width)         # left ear
    d.line(p(188, 72, 205, 50, 208, 86), fill="black", width=width)         # right ear
    for x in (172, 195):
        d.ellipse(p(x - 3, 92, x + 3, 98), fill="black")                    # eyes
    d.line(p(181, 105, 185, 110, 189, 105), fill="black", width=width - 1)   # nose and mouth
    for dy in (-4, 4):
        d.line(p(165, 108 + dy, 140, 104 + 2 * dy), fill="black", width=2)  # whiskers
        d.line(p(205, 108 + dy, 232, 104 + 2 * dy), fill="black", width=2)
    for x0, x1 in ((88, 82), (112, 116), (150, 146), (172, 178)):
        d.line(p(x0, 175, x1, 222), fill="black", width=width)              # legs
    d.line(p(72, 145, 52, 132, 40, 110, 42, 88, 55, 72), fill="black", width=width, joint="curve")  # tail
    return img


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flipsketch_cat_sketch.png")
    draw_cat().save(out)
    print(out)
