-- PostgreSQL leaves room on the pages of `runs` for in-place updates (its 0019); SQLite has no
-- such setting. Kept so both dialects number their migrations alike.
SELECT 1;
