DROP VIEW active_users;
DROP TABLE audit_log;
