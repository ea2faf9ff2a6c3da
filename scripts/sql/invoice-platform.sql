-- A realistic invoice-discounting platform schema with generated data, for the demo, the tests
-- and the benchmark. Set @scale (rows of the largest table ~ 20 * @scale) before sourcing; the
-- database name is `app`.
SET @scale = COALESCE(@scale, 500);
SET SESSION max_recursive_iterations = 100000000;

CREATE DATABASE IF NOT EXISTS app CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE app;

CREATE TABLE users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL UNIQUE,
  password VARCHAR(255) NOT NULL,
  role ENUM('admin','seller','investor') NOT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  updated_at TIMESTAMP NULL DEFAULT NULL
) ENGINE=InnoDB;

CREATE TABLE companies (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  owner_id BIGINT UNSIGNED NOT NULL,
  legal_name VARCHAR(255) NOT NULL,
  registration_no VARCHAR(32) NOT NULL,
  country CHAR(2) NOT NULL DEFAULT 'SA',
  credit_limit DECIMAL(15,2) NOT NULL,
  logo MEDIUMBLOB NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  CONSTRAINT companies_owner FOREIGN KEY (owner_id) REFERENCES users (id)
) ENGINE=InnoDB;

CREATE TABLE invoices (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  company_id BIGINT UNSIGNED NOT NULL,
  number VARCHAR(32) NOT NULL,
  debtor VARCHAR(255) NOT NULL,
  amount DECIMAL(15,2) NOT NULL,
  currency CHAR(3) NOT NULL DEFAULT 'SAR',
  due_date DATE NOT NULL,
  status ENUM('draft','listed','funded','repaid','defaulted') NOT NULL,
  notes TEXT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  KEY invoices_company (company_id),
  KEY invoices_status (status),
  CONSTRAINT invoices_company FOREIGN KEY (company_id) REFERENCES companies (id)
) ENGINE=InnoDB;

CREATE TABLE offers (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  invoice_id BIGINT UNSIGNED NOT NULL,
  investor_id BIGINT UNSIGNED NOT NULL,
  discount_rate DECIMAL(6,4) NOT NULL,
  amount DECIMAL(15,2) NOT NULL,
  accepted TINYINT(1) NOT NULL DEFAULT 0,
  created_at TIMESTAMP NULL DEFAULT NULL,
  KEY offers_invoice (invoice_id),
  CONSTRAINT offers_invoice FOREIGN KEY (invoice_id) REFERENCES invoices (id),
  CONSTRAINT offers_investor FOREIGN KEY (investor_id) REFERENCES users (id)
) ENGINE=InnoDB;

CREATE TABLE payments (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  invoice_id BIGINT UNSIGNED NOT NULL,
  amount DECIMAL(15,2) NOT NULL,
  paid_at DATETIME(6) NOT NULL,
  reference VARCHAR(64) NOT NULL,
  KEY payments_invoice (invoice_id),
  CONSTRAINT payments_invoice FOREIGN KEY (invoice_id) REFERENCES invoices (id)
) ENGINE=InnoDB;

CREATE TABLE audit_events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT UNSIGNED NULL,
  action VARCHAR(64) NOT NULL,
  subject_type VARCHAR(64) NOT NULL,
  subject_id BIGINT UNSIGNED NOT NULL,
  payload JSON NULL,
  ip VARBINARY(16) NULL,
  created_at DATETIME(6) NOT NULL,
  KEY audit_subject (subject_type, subject_id)
) ENGINE=InnoDB;

INSERT INTO users (name, email, password, role, created_at, updated_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < @scale)
SELECT CONCAT('User ', n), CONCAT('user', n, '@example.test'),
       CONCAT('$2y$10$', SHA2(CONCAT('pw', n), 256)),
       ELT(1 + n % 3, 'admin', 'seller', 'investor'),
       TIMESTAMP('2025-01-01') + INTERVAL n SECOND, TIMESTAMP('2025-01-01') + INTERVAL n MINUTE
FROM seq;

INSERT INTO companies (owner_id, legal_name, registration_no, country, credit_limit, logo, created_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < @scale)
SELECT n, CONCAT('Company ', n, ' O''Brien & Sons "Trading"'), LPAD(n, 10, '0'), ELT(1 + n % 3, 'SA', 'AE', 'EG'),
       ROUND(10000 + n * 37.5, 2), IF(n % 10 = 0, UNHEX(SHA2(n, 512)), NULL),
       TIMESTAMP('2025-01-01') + INTERVAL n MINUTE
FROM seq;

INSERT INTO invoices (company_id, number, debtor, amount, currency, due_date, status, notes, created_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < @scale * 10)
SELECT 1 + n % @scale, CONCAT('INV-', LPAD(n, 8, '0')), CONCAT('Debtor ', n % 97, ' (رياض) ltd.'),
       ROUND(500 + (n * 7919) % 100000 + 0.25, 2), 'SAR', DATE('2025-06-01') + INTERVAL n % 365 DAY,
       ELT(1 + n % 5, 'draft', 'listed', 'funded', 'repaid', 'defaulted'),
       IF(n % 4 = 0, CONCAT('Line one\nline two; tab\there, quote '' and backslash \\ #', n), NULL),
       TIMESTAMP('2025-01-01') + INTERVAL n MINUTE
FROM seq;

INSERT INTO offers (invoice_id, investor_id, discount_rate, amount, accepted, created_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < @scale * 20)
SELECT 1 + n % (@scale * 10), 1 + (n * 3) % @scale, 0.0100 + (n % 50) / 1000, ROUND(400 + (n * 131) % 90000, 2),
       n % 7 = 0, TIMESTAMP('2025-01-02') + INTERVAL n MINUTE
FROM seq;

INSERT INTO payments (invoice_id, amount, paid_at, reference)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < @scale * 5)
SELECT 1 + (n * 2) % (@scale * 10), ROUND(100 + (n * 613) % 50000, 2),
       TIMESTAMP('2025-02-01 00:00:00.123456') + INTERVAL n * 17 SECOND, CONCAT('PAY-', HEX(n * 2654435761))
FROM seq;

INSERT INTO audit_events (user_id, action, subject_type, subject_id, payload, ip, created_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < @scale * 20)
SELECT IF(n % 9 = 0, NULL, 1 + n % @scale), ELT(1 + n % 4, 'invoice.created', 'offer.accepted', 'payment.received', 'user.login'),
       'invoice', 1 + n % (@scale * 10), JSON_OBJECT('n', n, 'note', CONCAT('event ', n)),
       INET6_ATON(CONCAT('10.0.', n % 256, '.', n % 200)), TIMESTAMP('2025-01-01') + INTERVAL n SECOND
FROM seq;

CREATE VIEW funded_invoices AS
  SELECT i.id, i.number, i.amount, c.legal_name FROM invoices i JOIN companies c ON c.id = i.company_id
  WHERE i.status = 'funded';

DELIMITER ;;
CREATE TRIGGER invoices_audit AFTER UPDATE ON invoices FOR EACH ROW
BEGIN
  INSERT INTO audit_events (user_id, action, subject_type, subject_id, payload, created_at)
  VALUES (NULL, 'invoice.updated', 'invoice', NEW.id, JSON_OBJECT('status', NEW.status), NOW(6));
END ;;
CREATE PROCEDURE close_overdue(IN cutoff DATE)
BEGIN
  UPDATE invoices SET status = 'defaulted' WHERE status = 'funded' AND due_date < cutoff;
END ;;
CREATE FUNCTION net_amount(amount DECIMAL(15,2), rate DECIMAL(6,4)) RETURNS DECIMAL(15,2) DETERMINISTIC
  RETURN ROUND(amount * (1 - rate), 2) ;;
DELIMITER ;
CREATE EVENT purge_old_logins ON SCHEDULE EVERY 1 DAY DISABLE
  DO DELETE FROM audit_events WHERE action = 'user.login' AND created_at < NOW() - INTERVAL 10 YEAR;
