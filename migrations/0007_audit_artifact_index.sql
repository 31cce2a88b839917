-- Artifact queries match a substring (instr), which no index serves; the
-- index only cost a long-text insert on every audited request.
DROP INDEX audit_by_artifact;
