"""Previous inferences: a paginated grid of thumbnails; the GIF and full PNG load only in the detail view,
with each sample of a several-sample result and the other results of a compare group."""

import os
import time

import streamlit as st

from t2i.errors import SpecError
from t2i.families import FAMILIES, gif_caption
from t2i.output.infotext import to_infotext
from t2i.service.compare import HIDDEN, blind_groups, pixels_only
from t2i.service.ranking import family_of, win_rate
from t2i.output.render import grid_samples
from t2i.spec import check_search
from t2i.web.common import plain, store, visitor_id
from t2i.web.guard import is_operator, short_error

PAGE_SIZE = int(os.environ.get("T2I_GALLERY_PAGE_SIZE", 24))
COLUMNS = 4
PERIODS = {"any time": None, "last day": 86400, "last week": 7 * 86400, "last month": 30 * 86400}
SORTS = {"newest": "newest", "most preferred": "preferred"}
STATUSES = ["done", "all", "failed", "cancelled", "running", "queued"]
FILTERS = ("gallery_search", "gallery_family", "gallery_preset", "gallery_status", "gallery_period", "gallery_sort")

visitor = visitor_id()
db = store()
st.title("Previous inferences")


def detail(job_id: int) -> None:
    job, result = db.get(job_id), db.result(job_id)
    if st.button("Back to the gallery"):
        st.session_state.pop("gallery_detail", None)
        st.session_state["gallery_back"] = True
        st.rerun()
    if job is None:
        st.warning(f"No job {job_id}.")
        return
    if job.group_id in blind_groups(db, visitor, [job.group_id]):
        blind(job, result)
        return
    st.subheader(f"#{job.id} · {job.preset} · {job.status}")
    plain(job.prompt)
    if result is None:
        if job.error:
            st.error("This job failed:")
            plain(short_error(job.error, full=is_operator() or job.submitter == visitor))
        if job.group_id is not None:
            group(job)
        return
    if result.gone:  # its blob was deleted (t2i/store/sql_blobs.py): one line, not a crash
        st.warning(result.gone)
        return
    left, right = st.columns(2)
    left.image(result.gif, caption=gif_caption(result.parameters.get("family")), width=384)
    n = result.parameters.get("num_samples", 1)
    size = f"{result.width}x{result.height}"   # each sample's: a several-sample PNG is their grid
    right.image(result.png, caption=f"a grid of {n} samples, each {size}, seed {result.seed}" if n > 1
                else f"{size}, seed {result.seed}", width=384)
    samples(result)
    if job.group_id is not None:
        group(job)
    if result.appearances:
        st.caption(f"Votes: preferred in {result.wins:g} of {result.appearances} comparisons "
                   f"(smoothed rate {win_rate(result.wins, result.appearances):.0%})")
    else:
        st.caption("No votes yet.")
    # The PNG's `parameters` text, as other tools (A1111's PNG Info, image sites) show it; st.code has a
    # copy button. The complete record, with our prompt syntax and versions, is the JSON below.
    st.caption("Parameters (AUTOMATIC1111's form, as the PNG carries them)")
    st.code(to_infotext(result.parameters), language=None, wrap_lines=True)
    with st.expander("All parameters (JSON)"):
        st.json(result.parameters)


def blind(job, result) -> None:
    """A job of a compare group this visitor has not voted on: the image only (no preset, family,
    parameters or GIF caption: each would say which preset made it), and where to vote."""
    st.subheader(f"#{job.id} · compare group #{job.group_id} · {job.status}")
    plain(job.prompt)
    if result is not None:
        st.image(pixels_only(result.png), width=384)
    st.info(f"This image is part of a blind comparison: its preset is {HIDDEN} on the group (the Vote page "
            "shows its images in pairs), then its details are shown here.")


def samples(result) -> None:
    """Each sample of a several-sample result, cut out of its grid."""
    cut = grid_samples(result.png, result.parameters)
    if cut:
        st.caption(f"The {len(cut)} samples of the grid, one by one")
        st.image(cut, caption=[f"sample {k} of {len(cut)}" for k in range(1, len(cut) + 1)],
                 width=max(96, min(256, cut[0].width)), output_format="PNG")


def group(job) -> None:
    """The other jobs of the job's compare group: a thumbnail and a link each (one query, and one
    light result per job: never a PNG or GIF)."""
    others = [j for j in db.group(job.group_id) if j.id != job.id]
    if not others:
        return
    hidden = job.group_id in blind_groups(db, visitor, [job.group_id])
    st.subheader("The same prompt, other presets")
    st.caption(f"Compare group #{job.group_id}: one prompt and one seed submitted to {len(others) + 1} presets.")
    for column, other in zip(st.columns(max(len(others), COLUMNS)), others):
        with column:
            light = db.result(other.id, heavy=False) if other.status == "done" else None
            if light is not None and light.thumbnail:
                st.image(light.thumbnail, width="stretch")
            st.caption(f"#{other.id} · {HIDDEN if hidden else other.preset} · {other.status}")
            if st.button(f"Open #{other.id}", key=f"group-{other.id}"):
                st.session_state["gallery_detail"] = other.id
                st.rerun()


if "gallery_detail" in st.session_state:
    detail(st.session_state["gallery_detail"])
    st.stop()

# The detail view draws no filters, so the browser forgets their values while the session still filters
# by them: "Back" showed an empty search box over the filtered list, and the next click sent the empty
# box, dropping filter and page. So the filters are kept under a key of their own and, coming back (or
# when Streamlit has dropped them), assigned again: a value set through session_state is sent to the
# browser with the widget, so box and list agree.
saved = st.session_state.get("gallery_filters", {})
in_use = {name: family_of(name) for name in db.presets_in_use()}
families = ["all", *FAMILIES, *sorted(set(in_use.values()) - set(FAMILIES))]   # + "unknown" for removed presets
back = st.session_state.pop("gallery_back", False)
for key, value in saved.items():
    # the preset is restored below, once the family says which presets are listed
    if (back or key not in st.session_state) and key != "gallery_preset" and (key != "gallery_family"
                                                                               or value in families):
        st.session_state[key] = value
filters = st.columns([3, 2, 2, 2, 2, 2])
search = filters[0].text_input("Search prompts", key="gallery_search")
family = filters[1].selectbox("Family", families, key="gallery_family")
# The preset list narrows to the family; a preset of another family chosen before falls back to "all".
family_presets = [name for name, of in in_use.items() if family in ("all", of)]
presets = ["all", *family_presets]
if (back or "gallery_preset" not in st.session_state) and saved.get("gallery_preset") in presets:
    st.session_state["gallery_preset"] = saved["gallery_preset"]
if st.session_state.get("gallery_preset") not in presets:
    st.session_state["gallery_preset"] = "all"
preset = filters[2].selectbox("Preset", presets, key="gallery_preset")
status = filters[3].selectbox("Status", STATUSES, key="gallery_status")
period = filters[4].selectbox("Made", list(PERIODS), key="gallery_period")
sort = filters[5].radio("Sort", list(SORTS), key="gallery_sort", horizontal=True)
st.session_state["gallery_filters"] = {key: st.session_state[key] for key in FILTERS}
try:
    search = check_search(search)
except SpecError as e:
    st.warning(f"Search not run: {e}")
    st.stop()

# A changed filter starts again at page 1.
signature = (search, family, preset, status, period, sort)
if st.session_state.get("gallery_signature") != signature:
    st.session_state.update(gallery_signature=signature, gallery_page=1)
page = st.session_state.setdefault("gallery_page", 1)
since = time.time() - PERIODS[period] if PERIODS[period] else None
# A family is a list of presets (one query either way); a chosen preset is already of that family.
items, total = db.gallery(search=search or None, preset=None if preset == "all" else preset,
                          presets=family_presets if family != "all" and preset == "all" else None,
                          status=None if status == "all" else status, since=since, sort=SORTS[sort],
                          limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
pages = max(1, -(-total // PAGE_SIZE))
# Blind compare groups (t2i/service/compare.py): their presets are hidden until this visitor votes, and
# under a preset or family filter their images are left out, since being listed would name the preset.
hidden = blind_groups(db, visitor, [item["group_id"] for item in items])
left_out = [item for item in items if item["group_id"] in hidden] if preset != "all" or family != "all" else []
items = [item for item in items if item not in left_out]
st.caption(f"{total} matching · page {page} of {pages}" + (f" · {len(left_out)} left out here until you vote on "
                                                           "their compare groups" if left_out else ""))

for start in range(0, len(items), COLUMNS):
    for column, item in zip(st.columns(COLUMNS), items[start:start + COLUMNS]):
        with column:
            if item["thumbnail"]:
                st.image(item["thumbnail"], width="stretch")
            st.text(item["prompt"][:120])
            rate = f" · preferred {win_rate(item['wins'], item['appearances']):.0%} of {item['appearances']}" \
                if item["appearances"] else ""
            shown = HIDDEN if item["group_id"] in hidden else item["preset"]
            st.caption(f"#{item['id']} · {shown} · {item['status']}{rate}")
            if st.button("Details", key=f"detail-{item['id']}"):
                st.session_state["gallery_detail"] = item["id"]
                st.rerun()

previous, _, following = st.columns([1, 4, 1])
if previous.button("Previous", disabled=page <= 1):
    st.session_state["gallery_page"] = page - 1
    st.rerun()
if following.button("Next", disabled=page >= pages):
    st.session_state["gallery_page"] = page + 1
    st.rerun()
