-- The template a workflow was made from, so that enabling a template twice finds the first copy.
ALTER TABLE workflows ADD COLUMN template TEXT;
CREATE INDEX workflows_template ON workflows(account_id, template) WHERE template IS NOT NULL AND deleted = 0;
