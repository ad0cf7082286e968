"""The digits world's words: what its captions say, in a module without torch, so the pages' preset
guide (t2i/service/guide.py) can read them. t2i/data/digits.py draws the images and fills these templates."""

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {w}: the word, {d}: the numeral, {a}: "a" or "an" for the word, {an}: the same for the numeral.
TEMPLATES = (
    "{w}",
    "{d}",
    "the digit {w}",
    "a handwritten {d}",
    "number {w}",
    "{an} {d}",
    "the number {d}",
    "a handwritten {w}",
    "digit {d}",
    "an image of the digit {w}",
    "a picture of {a} {w}",
    "a drawing of the number {w}",
)
PROMPTS = tuple(f"the digit {w}" for w in DIGIT_WORDS)
