//! Products, prices, availability and the cart.

use super::*;

/// Products named in one list reply.
const LISTED: usize = 3;

/// The reply to a price question about one product.
pub(super) fn price_line(templates: &Templates, lang: &str, product: &Product) -> String {
    let price = templates.money(lang, product.price_cents);
    capitalise(&templates.render(
        lang,
        "price",
        &[("name", product.name(lang)), ("price", &price)],
    ))
}

/// The reply listing the first products of a search with their prices.
pub(super) fn list_line(templates: &Templates, lang: &str, products: &[Product]) -> String {
    let items: Vec<String> = products
        .iter()
        .take(LISTED)
        .map(|p| {
            let price = templates.money(lang, p.price_cents);
            templates.render(
                lang,
                "product_item",
                &[("name", p.name(lang)), ("price", &price)],
            )
        })
        .collect();
    let list = templates.list(lang, &items);
    templates.render(lang, "product_list", &[("list", &list)])
}

impl Exchange<'_> {
    pub(super) async fn products(&mut self) -> Result<Option<Vec<Product>>, CommerceError> {
        let key = self
            .c
            .slots
            .product
            .clone()
            .or_else(|| self.session.slots.product.clone());
        let Some(key) = key else {
            return Ok(None);
        };
        self.session.slots.product = Some(key.clone());
        Ok(Some(self.inner.commerce.products(&key).await?))
    }

    pub(super) async fn product(&mut self, intent: &str) -> Result<Option<Answer>, CommerceError> {
        self.session.stage = Stage::Browsing;
        let Some(products) = self.products().await? else {
            if intent == "availability_shipping" {
                return Ok(self.kb_answer());
            }
            return Ok(Some(Answer::done(self.render("product_ask", &[]))));
        };
        let Some(first) = products.first().cloned() else {
            return Ok(Some(Answer::done(self.render("product_none", &[]))));
        };
        let name = first.name(&self.lang).to_string();
        let templates = &self.inner.templates;
        let text = match intent {
            "price_inquiry" if products.len() == 1 => {
                self.facts.cents.insert(first.price_cents);
                price_line(templates, &self.lang, &first)
            }
            "availability_shipping" => {
                if first.stock > 0 {
                    let date = self.date(self.today.plus_days(first.ships_in_days));
                    capitalise(&self.render("availability_in", &[("name", &name), ("date", &date)]))
                } else {
                    capitalise(&self.render("availability_out", &[("name", &name)]))
                }
            }
            _ => {
                for p in products.iter().take(LISTED) {
                    self.facts.cents.insert(p.price_cents);
                }
                list_line(templates, &self.lang, &products)
            }
        };
        Ok(Some(Answer::done(text)))
    }

    pub(super) async fn cart_total(&mut self) -> Result<(String, String), CommerceError> {
        let mut items = Vec::new();
        let mut total = 0;
        for item in self.session.cart.clone() {
            let p = self.inner.commerce.products(&item.product).await?;
            let Some(p) = p.into_iter().find(|p| p.id == item.product) else {
                continue;
            };
            total += p.price_cents * i64::from(item.quantity);
            items.push(self.render(
                "cart_item",
                &[
                    ("quantity", &item.quantity.to_string()),
                    ("name", p.name(&self.lang)),
                ],
            ));
        }
        let list = self.inner.templates.list(&self.lang, &items);
        Ok((list, self.money(total)))
    }

    pub(super) async fn cart_add(&mut self) -> Result<Option<Answer>, CommerceError> {
        let Some(products) = self.products().await? else {
            return Ok(Some(Answer::done(self.render("product_ask", &[]))));
        };
        let Some(p) = products.into_iter().next() else {
            return Ok(Some(Answer::done(self.render("product_none", &[]))));
        };
        if p.stock <= 0 {
            let text = self.render("availability_out", &[("name", p.name(&self.lang))]);
            return Ok(Some(Answer::done(capitalise(&text))));
        }
        let quantity = self.c.slots.quantity.unwrap_or(1);
        match self.session.cart.iter_mut().find(|i| i.product == p.id) {
            Some(i) => i.quantity += quantity,
            None => self.session.cart.push(OrderItem {
                product: p.id.clone(),
                quantity,
            }),
        }
        self.session.cart_updated = self.now;
        self.session.stage = Stage::Cart;
        self.actions.push(Action::CartAdded {
            product: p.id.clone(),
            quantity,
        });
        let (_, total) = self.cart_total().await?;
        let text = self.render(
            "cart_added",
            &[
                ("quantity", &quantity.to_string()),
                ("name", p.name(&self.lang)),
                ("total", &total),
            ],
        );
        Ok(Some(Answer::done(text)))
    }

    pub(super) async fn cart_view(&mut self) -> Result<Option<Answer>, CommerceError> {
        if self.session.cart.is_empty() {
            return Ok(Some(Answer::done(self.render("cart_empty", &[]))));
        }
        let (list, total) = self.cart_total().await?;
        Ok(Some(Answer::done(self.render(
            "cart_view",
            &[("list", &list), ("total", &total)],
        ))))
    }

    pub(super) async fn checkout(&mut self) -> Result<Option<Answer>, CommerceError> {
        if self.session.cart.is_empty() {
            return Ok(Some(Answer::done(self.render("cart_empty", &[]))));
        }
        let (_, total) = self.cart_total().await?;
        self.propose(Change::PlaceOrder {
            items: self.session.cart.clone(),
        });
        self.session.stage = Stage::Checkout;
        Ok(Some(Answer::done(
            self.render("checkout_confirm", &[("total", &total)]),
        )))
    }
}
