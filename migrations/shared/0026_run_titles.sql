-- The title of what a run is about, when its event carried one that the run's ctx does not
-- hold: a pull request's (an issue's or a comment's run has its issue's title in ctx).
-- Shown on the run page; text the pull request's author wrote.
CREATE TABLE run_titles (
    run_id BIGINT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    title  TEXT NOT NULL
);
