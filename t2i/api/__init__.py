"""The HTTP API, served by the web app's own server under /api/ (webapp.py: st.App(routes=routes())).

    app        the FastAPI application, the route that carries it on st.App, body bounds
    auth       caller(request) -> Caller: API keys (Bearer or Basic) and the client address
    errors     one-line JSON errors with their status codes
    service    store(), submit_for(caller, ...), job_state(job, caller): the service layer for routes
    jobs       /api/v1/jobs...: submit, read, events, images, cancel, retry
    events     a job's server-sent events
    reads      gallery, leaderboard, presets, queue, votes
    schemas    the request bodies
    a1111      AUTOMATIC1111's /sdapi/v1: txt2img through the queue, models, samplers, options,
               progress, interrupt
    a1111_map  its txt2img request mapped onto a preset's family, and its answer's info

No Streamlit here but app.PathGuard's use of its path check: the pages and the API share the service
layer, not each other.
"""
