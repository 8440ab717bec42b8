-- Task limits beyond the hard timeout (issue 3): idle_timeout_s, memory_max_bytes,
-- pids_max, as one JSON object (absent keys are 0: no limit).
ALTER TABLE tasks ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
