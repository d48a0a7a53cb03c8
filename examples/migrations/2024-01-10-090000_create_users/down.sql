DROP TABLE users;
DROP FUNCTION touch_updated_at();
