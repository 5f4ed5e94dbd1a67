-- Why an event could not be used: a refused element of a Segment batch, or an unprocessable Customer.io body
-- (status 'refused' or 'unprocessable'); NULL for every other event.
ALTER TABLE events ADD COLUMN reason TEXT;
