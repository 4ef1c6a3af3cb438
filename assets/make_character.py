"""Draws assets/flipbook_character.png (the demo clipart) and its keypoints.

Run: python assets/make_character.py. The picture is ours (drawn here with PIL primitives), so the
pack ships it under the pack's own licence.
"""
import json
import os

from PIL import Image, ImageDraw

S = 512
HERE = os.path.dirname(os.path.abspath(__file__))

# Keypoints (x, y) in pixels and bones; index 2 (pelvis) is the root.
POINTS = {
    "head": (256, 112), "neck": (256, 176), "pelvis": (256, 300),
    "l_elbow": (196, 232), "l_hand": (140, 190), "r_elbow": (316, 232), "r_hand": (372, 190),
    "l_knee": (222, 372), "l_foot": (206, 440), "r_knee": (290, 372), "r_foot": (306, 440),
}
BONES = [("head", "neck"), ("neck", "pelvis"), ("neck", "l_elbow"), ("l_elbow", "l_hand"),
         ("neck", "r_elbow"), ("r_elbow", "r_hand"), ("pelvis", "l_knee"), ("l_knee", "l_foot"),
         ("pelvis", "r_knee"), ("r_knee", "r_foot")]
OUTLINE = (40, 36, 60, 255)


def capsule(d: ImageDraw.ImageDraw, a, b, w, fill):
    d.line([a, b], fill=OUTLINE, width=w + 10)
    for p in (a, b):
        r = (w + 10) / 2
        d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=OUTLINE)
    d.line([a, b], fill=fill, width=w)
    for p in (a, b):
        r = w / 2
        d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)


def draw() -> Image.Image:
    im = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    P = POINTS
    legs, arms = (62, 120, 200, 255), (255, 170, 60, 255)
    for a, b in [("pelvis", "l_knee"), ("l_knee", "l_foot"), ("pelvis", "r_knee"), ("r_knee", "r_foot")]:
        capsule(d, P[a], P[b], 30, legs)
    for a, b in [("neck", "l_elbow"), ("l_elbow", "l_hand"), ("neck", "r_elbow"), ("r_elbow", "r_hand")]:
        capsule(d, P[a], P[b], 24, arms)
    # shoes and hands
    for f in ("l_foot", "r_foot"):
        x, y = P[f]
        d.rounded_rectangle([x - 26, y - 4, x + 26, y + 22], 10, fill=(90, 60, 40, 255), outline=OUTLINE, width=5)
    for h in ("l_hand", "r_hand"):
        x, y = P[h]
        d.ellipse([x - 20, y - 20, x + 20, y + 20], fill=(255, 214, 170, 255), outline=OUTLINE, width=5)
    # torso
    d.rounded_rectangle([206, 168, 306, 316], 30, fill=(230, 70, 90, 255), outline=OUTLINE, width=6)
    d.ellipse([244, 210, 268, 234], fill=(255, 230, 120, 255), outline=OUTLINE, width=4)
    d.ellipse([244, 252, 268, 276], fill=(255, 230, 120, 255), outline=OUTLINE, width=4)
    # head with face
    x, y = P["head"]
    d.ellipse([x - 58, y - 58, x + 58, y + 58], fill=(255, 214, 170, 255), outline=OUTLINE, width=6)
    d.pieslice([x - 62, y - 66, x + 62, y + 20], 180, 360, fill=(110, 70, 40, 255), outline=OUTLINE, width=6)
    for ex in (-22, 22):
        d.ellipse([x + ex - 8, y - 4, x + ex + 8, y + 12], fill=OUTLINE)
    d.arc([x - 24, y + 6, x + 24, y + 38], 20, 160, fill=OUTLINE, width=5)
    return im


if __name__ == "__main__":
    draw().save(os.path.join(HERE, "flipbook_character.png"))
    names = list(POINTS)
    kp = {"points": [list(POINTS[n]) for n in names], "names": names,
          "edges": [[names.index(a), names.index(b)] for a, b in BONES], "root": names.index("pelvis")}
    with open(os.path.join(HERE, "flipbook_character.keypoints.json"), "w") as f:
        json.dump(kp, f)
        f.write("\n")
