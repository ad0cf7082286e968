"""The running service behind the pages and the executors: putting work on the queue (queue), running it
(executor), memory admission (memory), and what the pages compute from the store: job progress (jobview),
the preset guide (guide), compare groups (compare) and the ranking from votes (ranking)."""
