// Backend-neutral replay sessions, locations and the replay log.
