"""Generate: submit a prompt, watch it run (progress, latest frame, loss), get the GIF and PNG; or
compare presets: one prompt and seed on 2 to 4 presets, side by side (t2i/web/compare_view.py)."""

import streamlit as st

from t2i.service import guide, jobview, refill
from t2i import upscale
from t2i.errors import T2IError
from t2i.families import family, gif_caption, options_class
from t2i.service.caps import asked_size_note
from t2i.service.memory import size_note
from t2i.service.visitor_text import for_visitor
from t2i.presets import get_preset
from t2i.service.queue import GROUP_SIZE, SubmitPolicy, submit_group, submit_job
from t2i.output.render import PngTextError, read_parameters
from t2i.spec import DEFAULTS, MAX_IMAGE_BYTES, MAX_PROMPT_CHARS, UPLOAD_CAP_MB, Limits, SpecError, cut_prompt
from t2i.assets.weights import download_command, is_ready, ready_presets
from t2i.web import compare_view
from t2i.web.common import client_address, plain, store, visitor_id

SYNTAX = ("Separate parts with `|`; give each an optional weight and stop as `text:weight:stop`. "
          "A negative weight pushes away, e.g. `a lighthouse at dusk | oil painting:0.5 | blurry:-0.5`.")
COMMON = ("width", "height", "seed")
IMAGES = f"PNG, JPEG or WebP, up to {MAX_IMAGE_BYTES // 2**20} MB"
PLACEHOLDER = "a lighthouse in a storm, oil painting"  # for presets without examples of their own
NO_PARAMETERS = "This PNG carries no generation parameters (not made by this service, or they were stripped)."

visitor = visitor_id()
db = store()
st.title("Generate")


def _fill(params: dict) -> None:
    """Fill the form from a job's parameters (ours, or read_parameters' dict of another tool's PNG):
    the prompt; the preset when this host offers it; seed and size; the family's options. A field of
    the wrong type is left out and named in one line (refill.form_values). A callback: runs before the
    widgets are rebuilt."""
    s = st.session_state
    filled = refill.form_values(params, ready_presets(), s.get("preset"))
    if not filled.values:
        s["png_error"] = " ".join(filter(None, (NO_PARAMETERS, filled.note())))
        return
    for name, value in filled.values.items():
        s[name] = value
    if filled.other_preset:
        s["png_note"] = filled.other_preset
    if filled.prompt_length:
        s["png_cut"] = filled.prompt_length
    if filled.note():
        s["png_fields"] = filled.note()


def _open_png() -> None:
    """The "Open a PNG" uploader's callback: the form from the file's parameters, or a line saying
    it has none or too much."""
    upload = st.session_state.get("open_png")
    if upload is None:
        return
    try:
        params = read_parameters(upload.getvalue())
    except PngTextError as e:
        st.session_state["png_error"] = str(e)
        return
    if not isinstance(params, dict):
        st.session_state["png_error"] = NO_PARAMETERS
        return
    _fill(params)


def _use_example(text: str) -> None:
    st.session_state["prompt"] = text


def _number_input(column, label: str, name: str, help: str | None = None) -> None:
    """A number as text: the browser's number box turns "1e3" into 1 and "64.5" into 64 (parseInt),
    and silently blocks the form on values past its own bounds. As text, make_spec sees what was typed
    and refuses it with a line naming the field."""
    default = chosen.defaults.get(name, DEFAULTS.get(name))
    shown = "" if default is None else f"{default:g}" if isinstance(default, float) else str(default)
    if comparing:  # several presets, each with its own default
        shown = "each preset's default"
    column.text_input(label, key=name, help=help, placeholder=shown)


def _option_input(column, f) -> None:
    """One of the family's advanced options; empty means the preset's default."""
    if f.kind == "choice":
        # A preset may allow fewer choices than its family (the samplers correct for its model).
        choices = chosen.defaults.get(f"{f.name}s") or f.choices
        if st.session_state.get(f.name) not in (None, *choices):
            st.session_state[f.name] = None  # chosen for another preset: back to this one's default
        column.selectbox(f.label, [None, *choices], key=f.name, help=f.help or None,
                         format_func=lambda c: "(preset default)" if c is None else c)
    else:
        _number_input(column, f.label, f.name, f.help or None)


def _fit_prompt() -> None:
    """Before the run that submits: a prompt over the limit is cut in the box, and the run says so
    rather than submitting text the visitor has not seen. (A text area with max_chars drops a longer
    paste entirely, leaving the box empty.)"""
    s = st.session_state
    kept, length = cut_prompt(s.get("prompt") or "")
    if length > MAX_PROMPT_CHARS:
        s.prompt, s.prompt_cut = kept, length


def _upscale_choices(preset) -> list:
    """None (the preset's post-steps), "none", each known upscaler, and the preset's own chain when
    it has several (so "Generate again" can show it). Listed from the registry without torch."""
    try:
        known = upscale.names()
    except Exception:  # noqa: BLE001 - an unreadable registry must not take the page down: offer none
        known = []
    chain = [",".join(preset.post)] if len(preset.post) > 1 else []
    return [None, upscale.NONE, *known, *chain]


def _upscale_label(choice) -> str:
    if choice is None:
        return f"preset default ({', '.join(chosen.post) or upscale.NONE})"
    if choice == upscale.NONE:
        return "none"
    names = choice.split(",")
    missing = [n for n in names if n in _known and not upscale.is_ready(n)]
    return " then ".join(names) + (" (weights not downloaded)" if missing else "")


def _read(upload) -> bytes | None:
    return upload.getvalue() if upload is not None else None


def _show_guide(preset, about) -> None:
    """What the chosen preset is, is good at, takes here; for a world trained here, its words and
    three prompts it draws well (buttons that put one in the prompt box)."""
    pace = guide.speed(db, preset.name)
    weights = "Weights present" if is_ready(preset) else f"Weights missing: run `{download_command(preset.name)}`"
    st.caption(f"Family: {about.family}. Good at: {about.good_at}. Speed here: "
               f"{pace.describe() if pace else 'no finished jobs yet'}. {weights}.")
    if about.world is None:
        return
    with st.expander("Words it knows"):
        for heading, words in about.world.vocabulary.items():
            st.markdown(f"**{heading.capitalize()}**: {', '.join(words)}")
        st.caption("Other words are not in its captions: it has never seen them.")
    st.caption("Examples it draws well:")
    for column, example in zip(st.columns(len(about.world.examples)), about.world.examples):
        column.button(example, key=f"example-{example}", on_click=_use_example, args=(example,))


def _size_notes(group) -> list[str]:
    """A line for each preset that draws at its own size when the form asks for another."""
    s = st.session_state
    return [note for p in group if (note := asked_size_note(p, s.get("width"), s.get("height")))]


# Outside the form: choosing a preset reruns the page, so the advanced options are its family's.
presets = ready_presets()
st.selectbox("Preset", presets, key="preset",
             help="Presets with 'untrained' in their name use random weights: their images mean nothing.")
chosen = get_preset(st.session_state.get("preset") or presets[0])
about = guide.guide(chosen)
_show_guide(chosen, about)
comparing = st.toggle("Compare presets", key="compare_on",
                      help=f"The same prompt and seed on up to {GROUP_SIZE[1]} presets at once, side by side; which "
                           "preset made which image is shown after you pick the best.")
group = [chosen]
if comparing:
    others = [p for p in presets if p != chosen.name]
    if chosen.name in st.session_state.get("compare_with", ()):  # chosen above since: it is in the group already
        st.session_state["compare_with"] = [p for p in st.session_state["compare_with"] if p != chosen.name]
    st.multiselect(f"Compare {chosen.name} with", others, key="compare_with", max_selections=GROUP_SIZE[1] - 1,
                   placeholder=f"{GROUP_SIZE[0] - 1} to {GROUP_SIZE[1] - 1} more presets")
    group += [get_preset(p) for p in st.session_state.get("compare_with") or ()]
families = list(dict.fromkeys(p.family for p in group))
# The advanced options of every family in the group, each once: a field goes to the presets whose
# family has it (queue.submit_group), the others keep their defaults.
form = list({f.name: f for family in families for f in options_class(family).FORM}.values())
# Behind a toggle: the page shows an uploader only where it takes images (the guided family's form).
if st.toggle("Open a PNG", key="open_png_on", help="Fill the form from a PNG's parameters: prompt, preset, "
                                                   "seed, size and the family's options."):
    st.file_uploader("A PNG made by this service", type=["png"], key="open_png", on_change=_open_png)
if st.session_state.get("png_error"):
    st.error(st.session_state.pop("png_error"))
if st.session_state.get("png_fields"):  # our own words and field names only: nothing from the file
    st.warning(st.session_state.pop("png_fields"))
if st.session_state.get("png_cut"):
    st.warning(f"The PNG's prompt had {st.session_state.pop('png_cut')} characters and was cut to "
               f"{MAX_PROMPT_CHARS}; check its end.")
if st.session_state.get("png_note"):
    st.info("The PNG's preset is not offered on this host; the form keeps the chosen one. The PNG's:")
    plain(st.session_state.pop("png_note"))
examples = about.world.examples if about.world else ()
# The words the world does not know are named for the prompt the page last received (after an
# example, a preset change or a submit: a form's widgets send their values only with its button; a
# prompt box outside the form lost the Generate click to its own rerun in a real browser).
for preset in group:
    unknown = guide.unknown_words(preset, st.session_state.get("prompt") or "")
    if unknown:  # letters and digits only (guide's words): nothing in them reads as markdown
        st.warning(f"{preset.name} has never seen these words and will likely ignore them: {', '.join(unknown)}")
with st.form("generate"):
    st.text_area("Prompt", key="prompt", placeholder=examples[0] if examples else PLACEHOLDER)
    st.caption(f"{SYNTAX} At most {MAX_PROMPT_CHARS} characters.")
    if not comparing:  # a group keeps each preset's own post-steps
        upscale_choices = _upscale_choices(chosen)
        _known = set(upscale_choices[2:])
        if st.session_state.get("upscale") not in upscale_choices:
            st.session_state["upscale"] = None  # another preset's chain, or an upscaler no longer configured
        st.selectbox("Upscale the result", upscale_choices, key="upscale", format_func=_upscale_label,
                     help="An upscaler enlarges the finished image (ESRGAN / Real-ESRGAN: x4; SRCNN: x2, x3 or x4); "
                          "each counts as one more step of the job.")
    advanced = (f"Advanced options for {' and '.join(families)} presets (empty: the preset's defaults)" if not comparing
                else f"Advanced options for {' and '.join(families)} presets (each for the presets of its family; "
                     "empty: each preset's defaults)")
    with st.expander(advanced):
        left, right = st.columns(2)
        _number_input(left, "Width", "width")
        _number_input(right, "Height", "height")
        limits = Limits.from_env()
        for preset in group:
            st.caption((f"{preset.name}: " if comparing else "") + size_note(preset, limits.max_job_memory,
                                                                              limits.max_side))
        for note in _size_notes(group):
            st.caption(note)
        for i, f in enumerate(form):
            _option_input(left if i % 2 == 0 else right, f)
        st.text_input("Seed (empty: random; one for the whole group)" if comparing else "Seed (empty: random)",
                      key="seed")
        init_image = image_prompt = None
        if family(chosen.family).takes_images and not comparing:  # the other families take no images; a group neither
            # No type filter and a cap above the spec's limit: a file the browser refuses never reaches
            # the server, which would then queue the job without it. Here every file up to the cap
            # reaches check_image, which refuses it with a reason.
            init_image = st.file_uploader("Start from an image", type=None, key="init_image",
                                          max_upload_size=UPLOAD_CAP_MB, help=IMAGES)
            image_prompt = st.file_uploader("Steer towards an image", type=None, key="image_prompt",
                                            max_upload_size=UPLOAD_CAP_MB, help=IMAGES)
    submitted = st.form_submit_button("Generate", type="primary", on_click=_fit_prompt)

if submitted and st.session_state.get("prompt_cut"):
    st.warning(f"Not submitted: the prompt had {st.session_state.pop('prompt_cut')} characters and was cut to "
               f"{MAX_PROMPT_CHARS}; check its end and press Generate again.")
elif submitted and comparing:
    s = st.session_state
    try:
        ids = submit_group(db, s.prompt, [p.name for p in group], submitter=visitor, address=client_address(),
                           limits=Limits.from_env(), policy=SubmitPolicy.from_env(),
                           **{f: s.get(f) for f in [*COMMON, *(f.name for f in form)]})
    except (SpecError, T2IError) as e:
        st.error("Not submitted:")
        plain(for_visitor(str(e)))
    else:
        st.session_state["watching"] = ids[0]
        st.success(f"{len(ids)} jobs are queued as a compare group ({', '.join(f'#{i}' for i in sorted(ids))}).")
        for note in _size_notes(group):
            st.info(note)
elif submitted:
    s = st.session_state
    fields = [*COMMON, "upscale", *(f.name for f in form)]
    try:
        job_id = submit_job(db, s.prompt, chosen.name, submitter=visitor, address=client_address(),
                            limits=Limits.from_env(),
                            policy=SubmitPolicy.from_env(), **{f: s.get(f) for f in fields},
                            init_image=_read(init_image),
                            image_prompts=[b for b in [_read(image_prompt)] if b is not None])
    except (SpecError, T2IError) as e:
        st.error("Not submitted:")
        plain(for_visitor(str(e)))
    else:
        st.session_state["watching"] = job_id
        st.success(f"Job {job_id} is queued at position {db.queue_position(job_id)}.")
        for note in _size_notes(group):
            st.info(note)


def show_result(job_id: int) -> None:
    result = db.result(job_id)
    if result.gone:  # its blob was deleted (t2i/store/sql_blobs.py): one line, not a crash
        st.warning(result.gone)
        return
    gif_col, png_col = st.columns(2)
    gif_col.image(result.gif, caption=gif_caption(result.parameters.get("family")), width=384)
    png_col.image(result.png, caption=f"{result.width}x{result.height}, seed {result.seed}", width=384)
    a, b, c = st.columns(3)
    a.download_button("Download GIF", result.gif, file_name=f"t2i-{job_id}.gif", mime="image/gif")
    b.download_button("Download PNG", result.png, file_name=f"t2i-{job_id}.png", mime="image/png")
    c.button("Generate again with these settings", on_click=_fill, args=(result.parameters,))
    with st.expander("Parameters"):
        st.json(result.parameters)


def watch(job_id: int) -> None:
    job = db.get(job_id)
    if job is None:
        return
    st.subheader(f"Job {job.id} ({job.preset})")
    plain(job.prompt)
    if job.status == "queued":
        st.info(f"Waiting in the queue at position {db.queue_position(job.id)}.")
    elif job.status == "running":
        p = jobview.progress(job)
        st.progress(p.fraction, text=p.label)
        losses = st.session_state.setdefault(f"losses-{job.id}", {})
        if job.loss is not None:
            losses[job.step] = job.loss
        frame = db.latest_frame(job.id)
        left, right = st.columns(2)
        if frame:
            left.image(frame[1], caption=f"step {frame[0]}", width=320)
        if len(losses) > 1:  # families without a loss (diffusion) show steps and the preview only
            right.line_chart({"loss": [losses[k] for k in sorted(losses)]})
    elif job.status == "done":
        show_result(job.id)
    elif job.status == "failed":
        st.error("This job failed:")
        plain(job.error or "no reason recorded")
    else:
        st.warning("This job was cancelled.")
    # Only the submitter may cancel (their cookie, which no link carries, says who they are).
    if job.status in ("queued", "running") and job.submitter == visitor and st.button("Cancel", key=f"cancel-{job.id}"):
        db.cancel(job.id)
        st.rerun()
    key = f"status-{job.id}"
    previous, st.session_state[key] = st.session_state.get(key), job.status
    if previous is not None and previous != job.status:
        st.rerun()  # a full rerun: whether the view refreshes itself depends on the status


watching = st.session_state.get("watching")
if watching:
    current = db.get(watching)
    active = current is not None and current.status in ("queued", "running")
    # Inside its own container, so the fragment's reruns (which add and drop elements: progress,
    # then the result) cannot shift the elements after it. Without one, with both cores busy, the
    # "Your recent jobs" heading went missing after a job finished (browser test: 1 run in 3 failed;
    # with the container, 0 in 5).
    with st.container():
        if current is not None and current.group_id is not None:
            active = any(j.status in ("queued", "running") for j in db.group(current.group_id))
            st.fragment(compare_view.show, run_every=1.0 if active else None)(db, visitor, current.group_id)
        else:
            st.fragment(watch, run_every=1.0 if active else None)(watching)

mine = db.jobs(submitter=visitor, limit=10)
if mine:
    st.subheader("Your recent jobs")
    if not st.session_state.get("visitor_kept"):
        st.caption("Your browser sent no cookie: these jobs are yours until this tab is reloaded or closed.")
    for job in mine:
        cols = st.columns([1, 2, 5, 2])
        cols[0].text(f"#{job.id}")
        cols[1].text(job.status)
        cols[2].text(job.prompt[:80])
        if cols[3].button("Show", key=f"show-{job.id}"):
            st.session_state["watching"] = job.id
            st.rerun()
