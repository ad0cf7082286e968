"""Previous inferences: a paginated grid of thumbnails; the GIF and full PNG load only in the detail view."""

import os
import time

import streamlit as st

from t2i.ranking import win_rate
from t2i.web.common import plain, store

PAGE_SIZE = int(os.environ.get("T2I_GALLERY_PAGE_SIZE", 24))
COLUMNS = 4
PERIODS = {"any time": None, "last day": 86400, "last week": 7 * 86400, "last month": 30 * 86400}
SORTS = {"newest": "newest", "most preferred": "preferred"}
STATUSES = ["done", "all", "failed", "cancelled", "running", "queued"]

db = store()
st.title("Previous inferences")


def detail(job_id: int) -> None:
    job, result = db.get(job_id), db.result(job_id)
    if st.button("Back to the gallery"):
        st.session_state.pop("gallery_detail", None)
        st.rerun()
    if job is None:
        st.warning(f"No job {job_id}.")
        return
    st.subheader(f"#{job.id} · {job.preset} · {job.status}")
    plain(job.prompt)
    if result is None:
        if job.error:
            st.error("This job failed:")
            plain(job.error)
        return
    left, right = st.columns(2)
    left.image(result.gif, caption="the optimisation", width=384)
    right.image(result.png, caption=f"{result.width}x{result.height}, seed {result.seed}", width=384)
    if result.appearances:
        st.caption(f"Votes: preferred in {result.wins:g} of {result.appearances} comparisons "
                   f"(smoothed rate {win_rate(result.wins, result.appearances):.0%})")
    else:
        st.caption("No votes yet.")
    st.json(result.parameters)


if "gallery_detail" in st.session_state:
    detail(st.session_state["gallery_detail"])
    st.stop()

filters = st.columns([3, 2, 2, 2, 2])
search = filters[0].text_input("Search prompts", key="gallery_search")
preset = filters[1].selectbox("Preset", ["all", *db.presets_in_use()], key="gallery_preset")
status = filters[2].selectbox("Status", STATUSES, key="gallery_status")
period = filters[3].selectbox("Made", list(PERIODS), key="gallery_period")
sort = filters[4].radio("Sort", list(SORTS), key="gallery_sort", horizontal=True)

# A changed filter starts again at page 1.
signature = (search, preset, status, period, sort)
if st.session_state.get("gallery_signature") != signature:
    st.session_state.update(gallery_signature=signature, gallery_page=1)
page = st.session_state.setdefault("gallery_page", 1)
since = time.time() - PERIODS[period] if PERIODS[period] else None
items, total = db.gallery(search=search.strip() or None, preset=None if preset == "all" else preset,
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
