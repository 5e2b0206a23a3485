//! Orders: status, payment, and the changes a customer confirms before
//! they are committed.

use super::*;

impl Exchange<'_> {
    pub(super) async fn lookup_order(
        &mut self,
        open_only: bool,
    ) -> Result<OrderLookup, CommerceError> {
        let id = self
            .c
            .slots
            .order
            .clone()
            .or_else(|| self.session.slots.order.clone());
        if let Some(id) = id {
            return Ok(
                match self.inner.commerce.order(&self.msg.from, &id).await? {
                    Some(o) => {
                        self.session.slots.order = Some(o.id.clone());
                        OrderLookup::Found(o)
                    }
                    None => OrderLookup::NotFound(id),
                },
            );
        }
        let orders = self.inner.commerce.orders(&self.msg.from).await?;
        let pick = orders
            .iter()
            .find(|o| o.status.is_open())
            .or(if open_only { None } else { orders.first() })
            .cloned();
        Ok(match pick {
            Some(o) => {
                self.session.slots.order = Some(o.id.clone());
                OrderLookup::Found(o)
            }
            None => OrderLookup::NoneKnown,
        })
    }

    pub(super) fn propose(&mut self, change: Change) {
        self.session.pending = Some(Pending {
            change: change.clone(),
            proposed_at: self.now,
            asked_in: self.msg.id.clone(),
        });
        self.session.stage = Stage::AwaitingConfirmation;
        self.actions.push(Action::Proposed { change });
    }

    pub(super) async fn order_intent(
        &mut self,
        intent: &str,
    ) -> Result<Option<Answer>, CommerceError> {
        self.session.stage = Stage::Support;
        let open_only =
            intent != "order_status" && intent != "payment_status" && intent != "refund_request";
        let order = match self.lookup_order(open_only).await? {
            OrderLookup::Found(o) => o,
            OrderLookup::NotFound(id) => {
                self.session.slots.order = None;
                self.session.slots.awaiting_slot_for = Some(intent.into());
                return Ok(Some(Answer {
                    text: self.render("order_not_found", &[("order", &id)]),
                    resolved: false,
                }));
            }
            OrderLookup::NoneKnown => {
                self.session.slots.awaiting_slot_for = Some(intent.into());
                return Ok(Some(Answer::done(self.render("order_ask", &[]))));
            }
        };
        self.facts.statuses.insert(order.status.as_str().into());
        self.facts.statuses.insert(order.payment.as_str().into());
        let id = order.id.clone();
        let status = self.inner.templates.status(&self.lang, order.status);
        let refused = |t: &Self| t.render("refused", &[("order", &id), ("status", &status)]);
        let text = match intent {
            "order_status" => match (order.status, order.delivery_date) {
                (OrderStatus::Cancelled, _) => self.render("order_cancelled", &[("order", &id)]),
                (OrderStatus::Delivered, Some(d)) => {
                    let date = self.date(d);
                    self.render("order_delivered", &[("order", &id), ("date", &date)])
                }
                (_, Some(d)) => {
                    let date = self.date(d);
                    self.render(
                        "order_status",
                        &[("order", &id), ("status", &status), ("date", &date)],
                    )
                }
                (_, None) => self.render(
                    "order_status_undated",
                    &[("order", &id), ("status", &status)],
                ),
            },
            "payment_status" => {
                let payment = self.inner.templates.payment(&self.lang, order.payment);
                self.render("payment_status", &[("order", &id), ("payment", &payment)])
            }
            "delivery_change" => {
                if !order.status.is_open() {
                    refused(self)
                } else if let Some(d) = self.c.slots.date {
                    let date = self.today.resolve(d);
                    self.propose(Change::Reschedule {
                        order: id.clone(),
                        delivery_date: date,
                    });
                    let date = self.date(date);
                    self.render("delivery_confirm", &[("order", &id), ("date", &date)])
                } else {
                    self.session.slots.awaiting_slot_for = Some(intent.into());
                    self.render("delivery_ask_date", &[("order", &id)])
                }
            }
            "address_change" => {
                if !order.status.is_open() {
                    refused(self)
                } else if let Some(address) = self.c.slots.address.clone() {
                    self.propose(Change::Readdress {
                        order: id.clone(),
                        address: address.clone(),
                    });
                    self.render("address_confirm", &[("order", &id), ("address", &address)])
                } else {
                    self.session.slots.awaiting_slot_for = Some(intent.into());
                    self.render("address_ask", &[("order", &id)])
                }
            }
            "cancel_order" => {
                if order.status != OrderStatus::Processing {
                    refused(self)
                } else {
                    self.propose(Change::Cancel { order: id.clone() });
                    let total = self.money(order.total_cents);
                    self.render("cancel_confirm", &[("order", &id), ("total", &total)])
                }
            }
            "refund_request" => {
                if order.payment != PaymentStatus::Paid {
                    let payment = self.inner.templates.payment(&self.lang, order.payment);
                    self.render("refused", &[("order", &id), ("status", &payment)])
                } else {
                    self.propose(Change::Refund { order: id.clone() });
                    let total = self.money(order.total_cents);
                    self.render("refund_confirm", &[("order", &id), ("total", &total)])
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Answer::done(text)))
    }

    /// Commits a change the customer just confirmed.
    pub(super) async fn commit(&mut self, change: Change) {
        self.session.stage = Stage::Support;
        let result = self
            .inner
            .commerce
            .apply(&self.msg.from, &change, &self.msg.id)
            .await;
        let text = match result {
            Ok(order) => {
                self.actions.push(Action::Committed {
                    change: change.clone(),
                    order: order.id.clone(),
                    confirmed_turn: self.msg.id.clone(),
                });
                tracing::info!(number = %crate::channel::mask_number(&self.msg.from), order = %order.id, kind = change.kind(), turn = %self.msg.id, "change committed");
                let id = order.id.clone();
                match &change {
                    Change::Reschedule { delivery_date, .. } => {
                        // The date the backend now holds, not the one asked for.
                        let date = self.date(order.delivery_date.unwrap_or(*delivery_date));
                        self.render("delivery_done", &[("order", &id), ("date", &date)])
                    }
                    Change::Readdress { address, .. } => {
                        self.render("address_done", &[("order", &id), ("address", address)])
                    }
                    Change::Cancel { .. } => self.render("cancel_done", &[("order", &id)]),
                    Change::Refund { .. } => {
                        let total = self.money(order.total_cents);
                        self.render("refund_done", &[("order", &id), ("total", &total)])
                    }
                    Change::PlaceOrder { .. } => {
                        self.session.cart.clear();
                        let date = order.delivery_date.unwrap_or(self.today);
                        let date = self.date(date);
                        self.render("checkout_done", &[("order", &id), ("date", &date)])
                    }
                }
            }
            Err(CommerceError::Refused(reason)) => {
                self.actions.push(Action::Refused {
                    change: change.clone(),
                    reason: reason.clone(),
                });
                self.needs_review = true;
                self.render("backend_error", &[])
            }
            Err(e) => {
                tracing::warn!(error = %e, "change not committed");
                self.actions.push(Action::Refused {
                    change,
                    reason: e.to_string(),
                });
                self.needs_review = true;
                self.render("backend_error", &[])
            }
        };
        self.say(&text).await;
    }
}
