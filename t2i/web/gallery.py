"""Previous inferences: a paginated grid of thumbnails; the GIF and full PNG load only in the detail view."""

import os
import time

import streamlit as st

from t2i.errors import SpecError
from t2i.infotext import to_infotext
from t2i.ranking import win_rate
from t2i.spec import check_search
from t2i.web.common import plain, store, visitor_id
from t2i.web.guard import is_operator, short_error

PAGE_SIZE = int(os.environ.get("T2I_GALLERY_PAGE_SIZE", 24))
COLUMNS = 4
PERIODS = {"any time": None, "last day": 86400, "last week": 7 * 86400, "last month": 30 * 86400}
SORTS = {"newest": "newest", "most preferred": "preferred"}
STATUSES = ["done", "all", "failed", "cancelled", "running", "queued"]
FILTERS = ("gallery_search", "gallery_preset", "gallery_status", "gallery_period", "gallery_sort")

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
    st.subheader(f"#{job.id} · {job.preset} · {job.status}")
    plain(job.prompt)
    if result is None:
        if job.error:
            st.error("This job failed:")
            plain(short_error(job.error, full=is_operator() or job.submitter == visitor))
        return
    left, right = st.columns(2)
    guided = result.parameters.get("family", "guided") == "guided"
    left.image(result.gif, caption="the optimisation" if guided else "the denoising", width=384)
    right.image(result.png, caption=f"{result.width}x{result.height}, seed {result.seed}", width=384)
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


if "gallery_detail" in st.session_state:
    detail(st.session_state["gallery_detail"])
    st.stop()

# The detail view draws no filters, so the browser forgets their values while the session still filters
# by them: "Back" showed an empty search box over the filtered list, and the next click sent the empty
# box, dropping filter and page. So the filters are kept under a key of their own and, coming back (or
# when Streamlit has dropped them), assigned again: a value set through session_state is sent to the
# browser with the widget, so box and list agree.
saved = st.session_state.get("gallery_filters", {})
presets = ["all", *db.presets_in_use()]
back = st.session_state.pop("gallery_back", False)
for key, value in saved.items():
    if (back or key not in st.session_state) and (key != "gallery_preset" or value in presets):
        st.session_state[key] = value
filters = st.columns([3, 2, 2, 2, 2])
search = filters[0].text_input("Search prompts", key="gallery_search")
preset = filters[1].selectbox("Preset", presets, key="gallery_preset")
status = filters[2].selectbox("Status", STATUSES, key="gallery_status")
period = filters[3].selectbox("Made", list(PERIODS), key="gallery_period")
sort = filters[4].radio("Sort", list(SORTS), key="gallery_sort", horizontal=True)
st.session_state["gallery_filters"] = {key: st.session_state[key] for key in FILTERS}
try:
    search = check_search(search)
except SpecError as e:
    st.warning(f"Search not run: {e}")
    st.stop()

# A changed filter starts again at page 1.
signature = (search, preset, status, period, sort)
if st.session_state.get("gallery_signature") != signature:
    st.session_state.update(gallery_signature=signature, gallery_page=1)
page = st.session_state.setdefault("gallery_page", 1)
since = time.time() - PERIODS[period] if PERIODS[period] else None
items, total = db.gallery(search=search or None, preset=None if preset == "all" else preset,
                          status=None if status == "all" else status, since=since, sort=SORTS[sort],
                          limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
pages = max(1, -(-total // PAGE_SIZE))
st.caption(f"{total} matching · page {page} of {pages}")

for start in range(0, len(items), COLUMNS):
    for column, item in zip(st.columns(COLUMNS), items[start:start + COLUMNS]):
        with column:
            if item["thumbnail"]:
                st.image(item["thumbnail"], width="stretch")
            st.text(item["prompt"][:120])
            rate = f" · preferred {win_rate(item['wins'], item['appearances']):.0%} of {item['appearances']}" \
                if item["appearances"] else ""
            st.caption(f"#{item['id']} · {item['preset']} · {item['status']}{rate}")
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
